"""The requests pages and their actions through the Flask test client (SQLite and PostgreSQL): create with
every field, the live duplicate warning, import, modify, the status buttons, delete, privileges, CSRF.
Fields are found by their label and buttons by their text; what happened is read back through the API."""
import re

from tests.server.conftest import Api, new_token

from .conftest import sign_in
from .test_productions_page import form, forms, manager, submit, text

BASE = "lfn:/grid/superbvo.org/production/FastSim"
PARAMS = {"Analysis": "HadRecoilCocktail", "Generator": "B0B0bar_SL", "Geometry": "DG_4",
          "Background": "MixSuperbBkg_NoPair.tcl"}     # the data fixture's request (it has jobs)


def new_request(api, generator="Bd_Kpi", production="2010_July"):
    """An open request without jobs, made through the API."""
    r = api.post("/requests", json={
        "production": production, "parameters": {**PARAMS, "Generator": generator}, "events_per_job": 500,
        "output_lfn": f"{BASE}/{production}/output/{generator}", "output_sites": ["INFN-T1"]})
    assert r.status_code == 201, r.json
    return r.json


def buttons(client, path):
    return [b["text"] for f in forms(client.get(path).get_data(as_text=True)) for b in f.buttons]


def csrf_of(client):
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/requests").get_data(as_text=True)).group(1)


# ---------------------------------------------------------------- create


def test_a_manager_creates_a_request_with_every_field(client, data):
    api = manager(client)
    r = submit(client, "/requests?production=2010_July", "Create request", {
        "Analysis": "Generics", "Generator": "Bd_Kpi", "Geometry": "DG_4a", "Background": "none",
        "Priority": "7", "Min runnum": "20000000", "Required events": "1000000", "Events per job": "2500",
        "Number of jobs": "400", "Expected event time (s)": "0.25", "Max wallclock (s)": "7200",
        "Max RSS (MB, 0: none)": "2048", "Stall limit (s, 0: none)": "900", "Input mode": "LIST",
        "Input path(s), one LFN a line": f"{BASE}/in/a.root\n\n  {BASE}/in/b.root  \n",
        "Output directory LFN": f"{BASE}/2010_July/output/Generics",
        "Output directory (absolute)": "/storage/2010_July/Generics",
        "Test output directory LFN": f"{BASE}/tests/Generics",
        "Test output directory (absolute)": "/storage/tests/Generics",
        "INFN-T1": True, "INFN-TORINO": True, "Output file patterns, one a line": "*.root\n*.txt",
        "Note": "full request"})
    assert r.status_code == 302, text(r)[-400:]
    request_id = int(r.location.rsplit("/", 1)[1])
    req = api.get(f"/requests/{request_id}").json
    assert req["parameters"] == {"Analysis": "Generics", "Generator": "Bd_Kpi", "Geometry": "DG_4a",
                                 "Background": "none"}
    assert {k: req[k] for k in ("priority", "min_runnum", "required_events", "events_per_job", "num_jobs",
                                "event_time_s", "max_wct_s", "max_rss_mb", "stall_s", "input_mode")} == {
        "priority": 7, "min_runnum": 20000000, "required_events": 1000000, "events_per_job": 2500,
        "num_jobs": 400, "event_time_s": 0.25, "max_wct_s": 7200, "max_rss_mb": 2048, "stall_s": 900,
        "input_mode": "LIST"}
    assert req["input_paths"] == [f"{BASE}/in/a.root", f"{BASE}/in/b.root"]
    assert (req["output_lfn"], req["output_abs"]) == (f"{BASE}/2010_July/output/Generics", "/storage/2010_July/Generics")
    assert (req["test_output_lfn"], req["test_output_abs"]) == (f"{BASE}/tests/Generics", "/storage/tests/Generics")
    assert req["same_output_dirs"] is False
    assert req["output_sites"] == ["INFN-T1", "INFN-TORINO"] and req["output_patterns"] == ["*.root", "*.txt"]
    assert req["note"] == "full request" and req["status"] == "open" and req["created_by"] == "mgr"
    twin = api.get(f"/requests/{req['test_request']}").json
    assert twin["production"] == "2010_July_test" and twin["parameters"] == req["parameters"]
    page = client.get(r.location).get_data(as_text=True)
    assert f"Request {request_id} created in 2010_July, with its test request {twin['id']} in 2010_July_test." in page
    assert "request-created" in [a["type"] for a in api.get("/activities?user=mgr").json["activities"]]


def test_the_same_directories_box_is_off_by_default_and_shares_when_ticked(client, data):
    api = manager(client)
    html = client.get("/requests?production=2010_July").get_data(as_text=True)
    assert not form(html, "create-request").control("Same output directories for the associated test request")["checked"]
    fields = {**PARAMS, "Generator": "Derived", "Output directory LFN": f"{BASE}/2010_July/out/Derived"}
    r = submit(client, "/requests?production=2010_July", "Create request", fields)
    assert r.status_code == 302
    req = api.get(f"/requests/{r.location.rsplit('/', 1)[1]}").json
    assert req["test_output_lfn"] == f"{BASE}/2010_July_test/out/Derived" and req["same_output_dirs"] is False
    # the box wins over the test directory fields
    r = submit(client, "/requests?production=2010_July", "Create request", {
        **fields, "Generator": "Shared", "Same output directories for the associated test request": True,
        "Test output directory LFN": f"{BASE}/ignored"})
    assert r.status_code == 302
    req = api.get(f"/requests/{r.location.rsplit('/', 1)[1]}").json
    assert req["test_output_lfn"] == req["output_lfn"] and req["same_output_dirs"] is True
    # no production segment to rename and no test directory: refused, with what was typed kept
    r = submit(client, "/requests?production=2010_July", "Create request",
               {**fields, "Generator": "Lost", "Output directory LFN": f"{BASE}/elsewhere/Lost", "Note": "kept"})
    assert r.status_code == 400 and "has no segment 2010_July" in text(r)
    f = form(r.get_data(as_text=True), "create-request")
    assert f.control("Note")["value"] == "kept" and f.control("Generator")["value"] == "Lost"


def test_the_server_checks_the_note_and_the_sites_of_a_form(client, data):
    api = manager(client)
    fields = {**PARAMS, "Generator": "Checked", "Output directory LFN": f"{BASE}/2010_July/out/Checked"}
    r = submit(client, "/requests?production=2010_July", "Create request", {**fields, "Note": "n" * 256})
    assert r.status_code == 400 and "'note'" in text(r)
    html = client.get("/requests?production=2010_July").get_data(as_text=True)
    sent = form(html, "create-request").data(fields)
    sent.add("output_sites", "NOWHERE")
    r = client.post("/requests", data=sent)
    assert r.status_code == 400 and "unknown site NOWHERE" in text(r)
    assert len(api.get("/requests?production=2010_July").json["requests"]) == 1


# ---------------------------------------------------------------- the duplicate warning


def test_the_duplicate_warning_says_exists_and_goes_when_the_choice_is_new(client, data):
    manager(client)
    html = client.get("/requests?production=2010_July").get_data(as_text=True)
    assert 'hx-get="/requests/_duplicate"' in html and 'hx-target="#duplicate-warning"' in html
    assert 'id="duplicate-warning"' in html and "already exists" not in html
    query = {"production": "2010_July", **{f"p_{k}": v for k, v in PARAMS.items()}}
    warning = client.get("/requests/_duplicate", query_string=query).get_data(as_text=True)
    assert "A production request with the selected parameters already exists!" in warning
    assert f'href="/requests/{data["request"]["id"]}"' in warning
    assert client.get("/requests/_duplicate", query_string={**query, "p_Generator": "New"}).get_data(as_text=True).strip() == ""
    assert client.get("/requests/_duplicate", query_string={**query, "p_Geometry": ""}).get_data(as_text=True).strip() == ""
    # the server's rule still holds: a duplicate is refused with its 409 on the page
    r = submit(client, "/requests?production=2010_July", "Create request",
               {**PARAMS, "Output directory LFN": f"{BASE}/2010_July/out/again"})
    assert r.status_code == 409
    page = text(r)
    assert "a request with these parameters already exists in 2010_July" in page
    assert "A production request with the selected parameters already exists!" in page


# ---------------------------------------------------------------- import


def test_import_fills_the_form_from_a_request_of_another_production(client, data):
    api = manager(client)
    assert api.post("/productions", json={"name": "2011_March", "session": "FastSim", "version": "V0.2.5"}).status_code == 201
    source = data["request"]
    r = client.get(f"/requests?production=2011_March&from={source['id']}")
    assert r.status_code == 200
    f = form(r.get_data(as_text=True), "create-request")
    assert [o for o in f.control("Analysis")["options"] if o[1]] == [["HadRecoilCocktail", True]]
    assert f.control("Generator")["value"] == "B0B0bar_SL"
    assert f.control("Events per job")["value"] == "80000" and f.control("Min runnum")["value"] == "10000003"
    assert f.control("Output directory LFN")["value"] == f"{BASE}/2011_March/output/HadRecoilCocktail/DG_4/B0B0bar_SL"
    assert f.control("Test output directory LFN")["value"] == ""
    assert "already exists" not in r.get_data(as_text=True)      # new in this production
    # imported as it is: created in the other production with the source's settings
    r = client.post("/requests", data=f.data({}, "Create request"))
    assert r.status_code == 302
    made = api.get(f"/requests/{r.location.rsplit('/', 1)[1]}").json
    assert made["production"] == "2011_March" and made["parameters"] == source["parameters"]
    assert made["events_per_job"] == 80000 and made["max_wct_s"] == 3600 and made["output_sites"] == ["INFN-T1"]
    assert made["test_output_lfn"] == f"{BASE}/2011_March_test/output/HadRecoilCocktail/DG_4/B0B0bar_SL"
    # importing into the same production shows the warning at once
    r = client.get(f"/requests?production=2011_March&from={made['id']}")
    assert "A production request with the selected parameters already exists!" in r.get_data(as_text=True)


def test_the_import_selects_load_a_productions_requests_with_and_without_javascript(client, data):
    manager(client)
    fragment = client.get("/requests/_import?import_production=2010_July_test").get_data(as_text=True)
    test_id = data["request"]["test_request"]
    assert f'<option value="{test_id}">' in fragment and 'id="import-request"' in fragment
    html = client.get("/requests?production=2010_July").get_data(as_text=True)
    assert 'hx-get="/requests/_import"' in html and 'hx-target="#import-request"' in html
    # no JavaScript: Import with another production lists its requests, then Import with one fills the form
    r = submit(client, "/requests?production=2010_July", "Import", {"Import from production": "2010_July_test"})
    assert r.status_code == 200
    f = form(r.get_data(as_text=True), "import-form")
    assert [o[0] for o in f.control("Request to import")["options"]] == ["", str(test_id)]
    r = client.get("/requests", query_string=f.data({"Request to import": str(test_id)}, "Import"))
    assert form(r.get_data(as_text=True), "create-request").control("Generator")["value"] == "B0B0bar_SL"
    # another session's request is not offered, and asking for it says why
    client_api = Api(client, data["token"])
    assert client_api.post("/sessions", json={"name": "FullSim", "payload_module": "fastsim",
                                              "parameters": [{"name": "Analysis"}]}).status_code == 201
    assert client_api.post("/sessions/FullSim/software", json={
        "name": "Full", "version": "V1", "revision": 1, "lfn": f"{BASE}/full.tjz", "adler32": "1a2b3c4d",
        "workdir": "w", "exe": "e", "env": {}}).status_code == 201
    assert client_api.post("/productions", json={"name": "Full1", "session": "FullSim", "version": "V1"}).status_code == 201
    r = client_api.post("/requests", json={"production": "Full1", "parameters": {"Analysis": "a"},
                                           "output_lfn": "lfn:/grid/x/Full1/a"})
    assert r.status_code == 201
    r = client.get(f"/requests?production=2010_July&from={r.json['id']}")
    assert r.status_code == 400 and "is of session FullSim, not FastSim" in text(r)


# ---------------------------------------------------------------- modify, status, delete


def test_a_manager_modifies_a_request_and_only_note_and_priority_once_it_left_open(client, data):
    api = manager(client)
    req = new_request(api)
    path = f"/requests/{req['id']}"
    r = submit(client, path, "Save changes", {"Events per job": "750", "Note": "changed",
                                              "Same output directories for the associated test request": True})
    assert r.status_code == 302
    after = api.get(path).json
    assert after["events_per_job"] == 750 and after["note"] == "changed" and after["same_output_dirs"] is True
    assert after["test_output_lfn"] == after["output_lfn"]
    assert "Request {} modified: events_per_job, note, same_output_dirs.".format(req["id"]) in client.get(r.location).get_data(as_text=True)
    r = submit(client, path, "Save changes", {})
    assert r.status_code == 302 and "nothing changed" in client.get(r.location).get_data(as_text=True)
    r = submit(client, path, "Save changes", {"Input mode": "FILE"})
    assert r.status_code == 400 and "input mode FILE takes 1 to 1 input paths, not 0" in text(r)
    assert api.get(path).json["input_mode"] == "NONE"
    assert api.patch(path, json={"status": "valid"}).status_code == 200
    f = form(client.get(path).get_data(as_text=True), "modify-request")
    # the retry policy is the server's rule, not the jobs' shape: it changes too (server/retries.py)
    assert sorted(f.labels.values()) == ["Attempts at most (1: no automatic retry)", "Note", "Priority",
                                         "Retry back-off (s)"]
    r = submit(client, path, "Save changes", {"Priority": "9", "Note": "", "Attempts at most (1: no automatic retry)": "5"})
    assert r.status_code == 302
    after = api.get(path).json
    assert (after["priority"], after["note"], after["events_per_job"], after["max_attempts"]) == (9, "", 750, 5)
    # a forged shaping field is not read from a request that left open
    sent = f.data({"Priority": "10"}, "Save changes")
    sent.add("events_per_job", "1")
    assert client.post(path, data=sent).status_code == 302
    assert (api.get(path).json["priority"], api.get(path).json["events_per_job"]) == (10, 750)


def test_the_status_buttons_walk_open_valid_running_closed_and_a_skip_is_refused(client, data):
    api = manager(client)
    req = new_request(api)
    path = f"/requests/{req['id']}"
    csrf = csrf_of(client)
    r = client.post(f"{path}/status", data={"csrf": csrf, "status": "running"})
    assert r.status_code == 409 and f"request {req['id']} is open: it can only become valid" in text(r)
    assert api.get(path).json["status"] == "open"
    for button, status in (("Set valid", "valid"), ("Set running", "running"), ("Set closed", "closed")):
        assert button in buttons(client, path)
        r = submit(client, path, button)
        assert r.status_code == 302 and api.get(path).json["status"] == status
        assert f"Request {req['id']} is now {status}." in client.get(r.location).get_data(as_text=True)
    assert not [b for b in buttons(client, path) if b.startswith("Set ")]
    r = client.post(f"{path}/status", data={"csrf": csrf, "status": "open"})
    assert r.status_code == 409 and "it can only become nothing else" in text(r)
    # the list's button returns to the list
    other = new_request(api, "Listed")
    r = submit(client, "/requests?production=2010_July", "Set valid")
    assert r.location.endswith("/requests?production=2010_July")
    assert api.get(f"/requests/{other['id']}").json["status"] == "valid"


def test_delete_is_refused_while_a_request_has_jobs_and_works_without(client, data):
    api = manager(client)
    with_jobs = data["request"]["id"]
    assert "Delete" not in buttons(client, f"/requests/{with_jobs}")
    r = client.post(f"/requests/{with_jobs}/delete", data={"csrf": csrf_of(client)})
    assert r.status_code == 409 and f"request {with_jobs} has 4 jobs" in text(r)
    assert api.get(f"/requests/{with_jobs}").status_code == 200
    req = new_request(api)
    r = submit(client, f"/requests/{req['id']}", "Delete")
    assert r.status_code == 302 and r.location.endswith("/requests?production=2010_July")
    assert f"Request {req['id']} deleted with its test request {req['test_request']}." in client.get(r.location).get_data(as_text=True)
    assert api.get(f"/requests/{req['id']}").status_code == 404
    assert api.get(f"/requests/{req['test_request']}").status_code == 404


# ---------------------------------------------------------------- privileges and CSRF

ACTION_BUTTONS = {"Create request", "Save changes", "Delete", "Set valid", "Set running", "Set closed"}


def actions(request_id):
    return (("/requests", {"production": "2010_July", "p_Analysis": "Generics", "p_Generator": "g",
                           "p_Geometry": "g", "p_Background": "b", "output_lfn": f"{BASE}/2010_July/x"}),
            (f"/requests/{request_id}", {"note": "forged"}),
            (f"/requests/{request_id}/status", {"status": "valid"}),
            (f"/requests/{request_id}/delete", {}))


def test_shifters_and_monitoring_users_see_no_actions_and_get_403(client, data):
    api = Api(client, data["token"])
    req = new_request(api)
    for groups in (["Shift"], ["webui"]):
        assert sign_in(client, new_token(f"u-{groups[0]}", groups)).status_code == 302
        for path in ("/requests?production=2010_July", f"/requests/{req['id']}", f"/requests/{data['request']['id']}"):
            assert not ACTION_BUTTONS & set(buttons(client, path)), (groups, path)
        csrf = csrf_of(client)
        for path, fields in actions(req["id"]):
            r = client.post(path, data={"csrf": csrf, **fields})
            assert r.status_code == 403 and "create-requests" in text(r), (groups, path)
    after = api.get(f"/requests/{req['id']}").json
    assert after["status"] == "open" and after["note"] == ""
    assert len(api.get("/requests?production=2010_July").json["requests"]) == 2


def test_an_action_without_its_csrf_token_is_refused(client, data):
    api = manager(client)
    req = new_request(api)
    for path, fields in actions(req["id"]):
        assert client.post(path, data=fields).status_code == 400, path
        assert client.post(path, data={"csrf": "forged", **fields}).status_code == 400, path
    after = api.get(f"/requests/{req['id']}").json
    assert after["status"] == "open" and after["note"] == ""
    assert len(api.get("/requests?production=2010_July").json["requests"]) == 2


def test_a_test_productions_requests_are_shown_without_a_create_form(client, data):
    manager(client)
    r = client.get("/requests?production=2010_July_test")
    assert r.status_code == 200
    page = r.get_data(as_text=True)
    assert f'href="/requests/{data["request"]["test_request"]}"' in page
    assert "Create request" not in [b["text"] for f in forms(page) for b in f.buttons]
    assert client.get("/requests?production=nope").status_code == 404
    assert client.get("/requests?production=2010_July&from=999999").status_code == 404
    assert client.get("/requests/_duplicate").status_code == 404


def test_a_request_form_chooses_steps_and_a_follow_up_stage_and_an_unchanged_form_sends_nothing(client, data):
    """Issue 15 on the request form: steps one a line (`template NAME=VALUE ...`), the follow-up stage's
    fields; saved unchanged, nothing is sent (the form's values are the stored ones, defaults filled)."""
    api = manager(client)
    for template in ({"name": "sim", "module": "fastsim"}, {"name": "dq", "module": "dq", "args": ["bin/check"]},
                     {"name": "merge", "module": "merge"}):
        assert api.post("/sessions/FastSim/steps", json=template).status_code == 201
    fields = {"Analysis": "Generics", "Generator": "Steps", "Geometry": "DG_4", "Background": "none",
              "Events per job": "100", "Output directory LFN": f"{BASE}/2010_July/output/Steps", "INFN-T1": True,
              "Steps, one step template a line": "sim\ndq min_events=20 level=strict\n",
              "Step template": "merge", "Start when this fraction of the jobs is done": "0.9",
              "Outputs per follow-up job": "10"}
    r = submit(client, "/requests?production=2010_July", "Create request", fields)
    assert r.status_code == 302, text(r)[-400:]
    path = r.location
    req = api.get(f"/requests/{path.rsplit('/', 1)[1]}").json
    assert req["steps"] == [{"template": "sim", "parameters": {}},
                            {"template": "dq", "parameters": {"min_events": "20", "level": "strict"}}]
    assert req["followup"] == {"template": "merge", "condition": "fraction", "fraction": 0.9, "files_per_job": 10,
                               "patterns": ["*.merged.*"]}
    page = client.get(path).get_data(as_text=True)
    assert "sim → dq level=strict min_events=20" in page and "merge when 0.9 of the jobs are done" in page
    r = submit(client, path, "Save changes", {})
    assert r.status_code == 302 and "nothing changed" in client.get(r.location).get_data(as_text=True)
    r = submit(client, path, "Save changes", {"Steps, one step template a line": "sim\ndq min_events"})
    assert r.status_code == 400 and "steps line 2: 'min_events' is not NAME=VALUE" in text(r)
    r = submit(client, path, "Save changes", {"Steps, one step template a line": "sim\nnosuch"})
    assert r.status_code == 400 and "no step template 'nosuch'" in text(r)
    r = submit(client, path, "Save changes", {"Step template": ""})          # the stage dropped
    assert r.status_code == 302 and api.get(f"/requests/{req['id']}").json["followup"] == {}
