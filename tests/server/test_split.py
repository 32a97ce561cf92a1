"""Splitting a request into jobs (server/splitting.py), on SQLite and PostgreSQL: the slicing rules, the
last slice, DIR from the catalog, refusals, the dry run, a resubmit keeping its slice, a second submission."""
import io
import re

import pytest

from server import splitting
from server.client.library import BadInput
from server.client.output import Output
from server.client.submissions import parse_bulk, print_plan, read_split_list

from .conftest import event, new_token

IN = "lfn:/grid/superbvo.org/production/FastSim/Input"
LFNS = [f"{IN}/in_{i:02d}.root" for i in range(10)]
SLICES_OF_3 = [LFNS[0:3], LFNS[3:6], LFNS[6:9], LFNS[9:10]]


def split_request(api, production, generator, mode="LIST", paths=LFNS, files_per_job=3, valid=True):
    """A request of `production` (made by the conftest's `production`) with LIST or DIR input split by
    `files_per_job`; its id."""
    r = api.post("/requests", json={
        "production": production["production"], "min_runnum": 50000000, "events_per_job": 100,
        "parameters": {"Analysis": "Generics", "Generator": generator, "Geometry": "DG_4", "Background": "none"},
        "input_mode": mode, "input_paths": list(paths), "files_per_job": files_per_job,
        "output_lfn": f"lfn:/grid/superbvo.org/production/FastSim/2010_July/output/{generator}",
        "output_sites": ["INFN-T1"]})
    assert r.status_code == 201, r.json
    if valid:
        assert api.patch(f"/requests/{r.json['id']}", json={"status": "valid"}).status_code == 200
    return r.json["id"]


def bulk_submit(api, request_id, status=201, dry_run=False, **bulk):
    """POST /submissions with one bulk on `request_id` at INFN-T1 (overrides in `bulk`); the reply's JSON."""
    body = {"production": "2010_July", "dry_run": dry_run,
            "bulks": [dict({"request": request_id, "sites": ["INFN-T1"], "events": 100}, **bulk)]}
    r = api.post("/submissions", json=body)
    assert r.status_code == status, r.json
    return r.json


def inputs_of(api, job_ids):
    """Each job's input as its description carries it, and as its API reply records it."""
    described = [api.get(f"/jobs/{j}/description").json["input"] for j in job_ids]
    recorded = [api.get(f"/jobs/{j}").json["input"] for j in job_ids]
    assert all(r["split"] for r in recorded)
    assert [{"mode": r["mode"], "paths": r["paths"]} for r in recorded] == described
    return described


# ---------------------------------------------------------------------- the rules, without a database

def test_deal_gives_sites_contiguous_shares_or_at_most_runs_each():
    assert splitting.deal(4, 1) == [4]
    assert splitting.deal(5, 2) == [3, 2]
    assert splitting.deal(1, 3) == [1, 0, 0]
    assert splitting.deal(5, 2, runs=2) == [2, 2]
    assert splitting.deal(3, 2, runs=2) == [2, 1]
    assert splitting.deal(3, 0) == []


# ---------------------------------------------------------------------- slicing

def test_files_per_job_gives_each_job_the_next_n_in_order_and_the_last_the_rest(api, production):
    request_id = split_request(api, production, "Split3")
    plan = bulk_submit(api, request_id)
    (st,) = plan["sets"]
    assert st["jobs"] == 4 and len(plan["job_ids"]) == 4 and st["rows"][0]["events"] == 400
    assert st["split"] == {"by": "files_per_job", "files_per_job": 3, "input_files": 10, "slices": 4, "left": 0,
                           "files_already_given": 0, "repeat_slices": False, "first_slices": SLICES_OF_3[:3]}
    assert inputs_of(api, plan["job_ids"]) == [{"mode": "LIST", "paths": s} for s in SLICES_OF_3]
    runnums = [api.get(f"/jobs/{j}").json["runnum"] for j in plan["job_ids"]]
    assert runnums == list(range(50000000, 50000004))   # slice order is runnum order


def test_a_request_that_is_not_split_gives_every_job_its_whole_input(api, production):
    request_id = split_request(api, production, "Whole", files_per_job=0)
    plan = bulk_submit(api, request_id, runs=2)
    assert plan["sets"][0]["split"] is None
    for job_id in plan["job_ids"]:
        assert api.get(f"/jobs/{job_id}/description").json["input"] == {"mode": "LIST", "paths": LFNS}
        assert api.get(f"/jobs/{job_id}").json["input"] == {"mode": "LIST", "paths": LFNS, "split": False}
    # and runs stays required where there is no split
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [
        {"request": request_id, "sites": ["INFN-T1"], "events": 100}]})
    assert r.status_code == 400 and "'bulks[0].runs'" in r.json["message"], r.json


def test_slices_are_dealt_to_the_sites_in_order(api, production):
    request_id = split_request(api, production, "TwoSites", files_per_job=2)   # 5 slices
    plan = bulk_submit(api, request_id, sites=["INFN-T1", "INFN-TORINO"])
    rows = plan["sets"][0]["rows"]
    assert [(r["site"], r["jobs"]) for r in rows] == [("INFN-T1", 3), ("INFN-TORINO", 2)]
    got = [(api.get(f"/jobs/{j}").json["site"], d["paths"]) for j, d in
           zip(plan["job_ids"], inputs_of(api, plan["job_ids"]))]
    assert got == [("INFN-T1", LFNS[0:2]), ("INFN-T1", LFNS[2:4]), ("INFN-T1", LFNS[4:6]),
                   ("INFN-TORINO", LFNS[6:8]), ("INFN-TORINO", LFNS[8:10])]


def test_a_dir_request_is_split_from_the_files_the_catalog_holds_below_it(api, production):
    directory = f"{IN}/dirsplit"
    names = ["b.root", "a.root", "sub/c.root", "d.root", "e.root"]
    for name in names:
        r = api.post("/catalog/replicas", json={"lfn": f"{directory}/{name}", "site": "INFN-T1",
                                                "surl": f"root://se.test//store/dirsplit/{name}", "size": 10,
                                                "adler32": "0000000a"})
        assert r.status_code in (200, 201), r.json
    # a sibling whose name starts like the directory's is not below it
    assert api.post("/catalog/replicas", json={"lfn": f"{directory}2/x.root", "site": "INFN-T1",
                                               "surl": "root://se.test//store/x.root", "size": 1,
                                               "adler32": "00000001"}).status_code in (200, 201)
    request_id = split_request(api, production, "Dir", mode="DIR", paths=[directory], files_per_job=2)
    plan = bulk_submit(api, request_id)
    expected = sorted(f"{directory}/{n}" for n in names)
    assert plan["sets"][0]["split"]["input_files"] == 5
    assert [d["paths"] for d in inputs_of(api, plan["job_ids"])] == [expected[0:2], expected[2:4], expected[4:5]]
    # the directory grows: a second submission gives jobs to the new files only
    api.post("/catalog/replicas", json={"lfn": f"{directory}/f.root", "site": "INFN-T1",
                                        "surl": "root://se.test//store/dirsplit/f.root", "size": 10,
                                        "adler32": "0000000a"})
    again = bulk_submit(api, request_id)
    assert again["sets"][0]["split"]["files_already_given"] == 5
    assert [d["paths"] for d in inputs_of(api, again["job_ids"])] == [[f"{directory}/f.root"]]


def test_an_empty_directory_is_refused_in_one_line(api, production):
    request_id = split_request(api, production, "EmptyDir", mode="DIR", paths=[f"{IN}/nothing_here"])
    reply = bulk_submit(api, request_id, status=409)
    assert reply["error"] == "empty-input-dir" and "\n" not in reply["message"]
    assert f"{IN}/nothing_here" in reply["message"]
    assert api.get(f"/requests/{request_id}").json["jobs"] == {}


def test_two_files_of_one_name_in_a_dir_slice_are_refused(api, production):
    directory = f"{IN}/clash"
    for sub in ("x", "y"):
        api.post("/catalog/replicas", json={"lfn": f"{directory}/{sub}/same.root", "site": "INFN-T1",
                                            "surl": f"root://se.test//store/{sub}/same.root", "size": 1,
                                            "adler32": "00000001"})
    request_id = split_request(api, production, "Clash", mode="DIR", paths=[directory], files_per_job=2)
    reply = bulk_submit(api, request_id, status=409)
    assert reply["error"] == "input-name-clash" and "same.root" in reply["message"]
    assert bulk_submit(api, request_id, runs=1, dry_run=True, status=409)["error"] == "input-name-clash"
    assert api.get(f"/requests/{request_id}").json["jobs"] == {}


# ---------------------------------------------------------------------- an explicit list at submission

def test_an_explicit_list_makes_one_job_per_element(api, production):
    request_id = split_request(api, production, "Listed", files_per_job=0)
    elements = [[LFNS[4], LFNS[0]], [LFNS[7]], LFNS[1:4]]
    plan = bulk_submit(api, request_id, split=elements)
    assert plan["sets"][0]["split"]["by"] == "list" and plan["sets"][0]["jobs"] == 3
    assert [d["paths"] for d in inputs_of(api, plan["job_ids"])] == elements
    # the same list again: every element was given already
    reply = bulk_submit(api, request_id, split=elements, status=409)
    assert reply["error"] == "no-pending-slices" and "repeat_slices" in reply["message"]
    # an element sharing a file with a job's slice and holding new ones: refused, naming the job
    reply = bulk_submit(api, request_id, split=[[LFNS[0], LFNS[9]]], status=409)
    assert reply["error"] == "slice-overlap" and LFNS[0] in reply["message"]
    runnum = api.get(f"/jobs/{plan['job_ids'][0]}").json["runnum"]
    assert f"job {runnum}" in reply["message"]
    # given elements are left out, new ones make jobs
    more = bulk_submit(api, request_id, split=[[LFNS[7]], [LFNS[9], LFNS[8]]])
    assert more["sets"][0]["split"]["files_already_given"] == 1
    assert [d["paths"] for d in inputs_of(api, more["job_ids"])] == [[LFNS[9], LFNS[8]]]


@pytest.mark.parametrize("split, needle", [
    ([], "'bulks[0].split' must be a non-empty list"),
    ("lfn:/a", "'bulks[0].split' must be a non-empty list"),
    ([[]], "'bulks[0].split[0]' must be a non-empty list of LFNs"),
    ([LFNS[0]], "'bulks[0].split[0]' must be a non-empty list of LFNs"),
    ([[LFNS[0]], ["not-an-lfn"]], "'bulks[0].split[1][0]' must be an LFN"),
    ([[LFNS[0], "lfn:/x/../y"]], "'bulks[0].split[0][1]' must not contain"),
    ([[f"{IN}/elsewhere.root"]], "is not one of the request's input paths"),
    ([[LFNS[0]], [LFNS[1], LFNS[0]]], "is in 'bulks[0].split[0]' too"),
])
def test_a_bad_explicit_list_is_refused_in_one_line(api, production, split, needle):
    request_id = split_request(api, production, "BadList", files_per_job=0)
    reply = bulk_submit(api, request_id, split=split, status=400)
    assert needle in reply["message"] and "\n" not in reply["message"], reply
    assert api.get(f"/requests/{request_id}").json["jobs"] == {}


def test_an_explicit_list_is_for_list_requests_only(api, production):
    request_id = split_request(api, production, "DirList", mode="DIR", paths=[IN], files_per_job=0)
    reply = bulk_submit(api, request_id, runs=1, split=[[LFNS[0]]], status=400)
    assert "'bulks[0].split' is for LIST requests" in reply["message"] and "input mode DIR" in reply["message"]


def test_too_long_an_explicit_list_is_refused(api, production):
    request_id = split_request(api, production, "LongList", files_per_job=0)
    reply = bulk_submit(api, request_id, split=[[LFNS[0]]] * (splitting.MAX_SPLIT_ELEMENTS + 1), status=400)
    assert f"more than {splitting.MAX_SPLIT_ELEMENTS} elements" in reply["message"]


# ---------------------------------------------------------------------- the request's setting

@pytest.mark.parametrize("body, needle", [
    ({"input_mode": "NONE", "input_paths": [], "files_per_job": 3}, "'files_per_job' splits LIST or DIR input"),
    ({"input_mode": "FILE", "input_paths": [LFNS[0]], "files_per_job": 1}, "the input mode is FILE"),
    ({"input_mode": "LIST", "input_paths": LFNS, "files_per_job": -1}, "'files_per_job' must be between 0"),
    ({"input_mode": "LIST", "input_paths": LFNS, "files_per_job": 10001}, "'files_per_job' must be between 0"),
    ({"input_mode": "LIST", "input_paths": LFNS, "files_per_job": "3"}, "'files_per_job' must be an integer"),
])
def test_a_bad_files_per_job_is_refused_on_create(api, production, body, needle):
    r = api.post("/requests", json=dict({
        "production": "2010_July", "parameters": {"Analysis": "Generics", "Generator": "Bad", "Geometry": "DG_4",
                                                  "Background": "none"},
        "output_lfn": "lfn:/grid/superbvo.org/production/FastSim/2010_July/output/bad"}, **body))
    assert r.status_code == 400 and needle in r.json["message"] and "\n" not in r.json["message"], r.json


def test_files_per_job_is_shown_changed_while_open_and_kept_with_the_input_mode(api, production):
    request_id = split_request(api, production, "Patch", valid=False)
    shown = api.get(f"/requests/{request_id}").json
    assert shown["files_per_job"] == 3
    twin = api.get(f"/requests/{shown['test_request']}").json
    assert twin["files_per_job"] == 3   # the test request splits as its request does
    r = api.patch(f"/requests/{request_id}", json={"input_mode": "NONE", "input_paths": []})
    assert r.status_code == 400 and "'files_per_job' splits LIST or DIR input" in r.json["message"]
    r = api.patch(f"/requests/{request_id}", json={"files_per_job": 4})
    assert r.status_code == 200 and r.json["files_per_job"] == 4
    assert api.patch(f"/requests/{request_id}", json={"status": "valid"}).status_code == 200
    r = api.patch(f"/requests/{request_id}", json={"files_per_job": 2})
    assert r.status_code == 409 and r.json["error"] == "request-not-open"


# ---------------------------------------------------------------------- dry run, resubmit, submitting again

def test_the_dry_run_shows_the_split_and_prepares_nothing(api, production):
    request_id = split_request(api, production, "Dry")
    plan = bulk_submit(api, request_id, dry_run=True, status=200)
    split = plan["sets"][0]["split"]
    assert (split["slices"], split["files_per_job"], split["first_slices"]) == (4, 3, SLICES_OF_3[:3])
    assert plan["job_ids"] == [] and plan["total_jobs"] == 4
    assert api.get(f"/requests/{request_id}").json["jobs"] == {}
    # `sbk submit --dry-run` prints it
    stream = io.StringIO()
    print_plan(Output(stream=stream), plan)
    text = stream.getvalue()
    assert "Split: 4 slice(s), 3 files per job, of 10 input file(s); 0 already in jobs' slices" in text
    assert f"First slice(s): {', '.join(LFNS[0:3])} | {', '.join(LFNS[3:6])}" in text


def test_a_resubmitted_job_keeps_its_slice(api, production):
    request_id = split_request(api, production, "Resubmit")
    job_id = bulk_submit(api, request_id)["job_ids"][1]
    token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
    wrapper = api.as_(token)
    assert wrapper.post(f"/jobs/{job_id}/events", json=event(1, step="RUNNING-03")).status_code == 200
    assert wrapper.post(f"/jobs/{job_id}/events", json=event(2, "failed", code=30)).status_code == 200
    assert api.get(f"/jobs/{job_id}").json["status"] == "failed"
    r = api.post(f"/jobs/{job_id}/resubmit")
    assert r.status_code == 200 and r.json["attempt"] == 2, r.json
    desc = api.post(f"/jobs/{job_id}/token").json
    assert desc["job"]["attempt"] == 2 and desc["input"] == {"mode": "LIST", "paths": SLICES_OF_3[1]}
    assert api.get(f"/jobs/{job_id}").json["input"]["paths"] == SLICES_OF_3[1]
    # its files stay given: a new submission of the request does not split them again
    reply = bulk_submit(api, request_id, status=409)
    assert reply["error"] == "no-pending-slices"


def test_a_second_submission_makes_only_the_slices_no_job_has(api, production):
    request_id = split_request(api, production, "Portions")
    first = bulk_submit(api, request_id, runs=1)
    assert first["sets"][0]["split"]["left"] == 3
    second = bulk_submit(api, request_id, runs=2)
    assert second["sets"][0]["split"]["files_already_given"] == 3
    third = bulk_submit(api, request_id)
    got = [d["paths"] for ids in (first, second, third) for d in inputs_of(api, ids["job_ids"])]
    assert got == SLICES_OF_3
    reply = bulk_submit(api, request_id, status=409)
    assert reply["error"] == "no-pending-slices" and "\n" not in reply["message"]
    # asked for: every slice again (a new pass)
    again = bulk_submit(api, request_id, repeat_slices=True)
    assert again["sets"][0]["split"]["repeat_slices"] is True
    assert [d["paths"] for d in inputs_of(api, again["job_ids"])] == SLICES_OF_3
    assert api.get(f"/requests/{request_id}").json["jobs"] == {"prepared": 8}


def test_two_bulks_of_one_submission_share_out_the_slices(api, production):
    request_id = split_request(api, production, "TwoBulks")
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [
        {"request": request_id, "sites": ["INFN-T1"], "runs": 1, "events": 100},
        {"request": request_id, "sites": ["INFN-TORINO"], "events": 100}]})
    assert r.status_code == 201, r.json
    first, second = r.json["sets"]
    assert (first["jobs"], second["jobs"]) == (1, 3)
    assert second["split"]["files_already_given"] == 3
    assert [d["paths"] for d in inputs_of(api, r.json["job_ids"])] == SLICES_OF_3


def test_a_test_bulk_splits_the_test_request(api, production):
    request_id = split_request(api, production, "TestTwin")
    plan = bulk_submit(api, request_id, test=True, runs=1)
    (st,) = plan["sets"]
    assert st["production"] == "2010_July_test" and st["jobs"] == 1 and st["split"]["left"] == 3
    assert inputs_of(api, plan["job_ids"]) == [{"mode": "LIST", "paths": SLICES_OF_3[0]}]
    # the main request's slices are its own
    assert len(bulk_submit(api, request_id)["job_ids"]) == 4


# ---------------------------------------------------------------------- the pages

def _csrf(page):
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_the_submit_page_summary_shows_the_split_and_the_job_page_the_slice(api, production, client):
    from tests.web.conftest import sign_in
    from tests.web.formparse import forms
    request_id = split_request(api, production, "Web")
    token = new_token("expert", ["Developer"])
    assert sign_in(client, token).status_code == 302
    page = client.get("/submit/expert?production=2010_July").get_data(as_text=True)
    form = {"csrf": _csrf(page), "do": "summary", "production": "2010_July", "bulk": "1",
            "b1.request": str(request_id), "b1.sites": "INFN-T1", "b1.events": "100", "b1.runs": ""}
    html = client.post("/submit/expert", data=form).get_data(as_text=True)
    assert 'id="split-1"' in html and "3 file(s) per job" in html and "of 10 input file(s)" in html
    assert LFNS[3] in html and LFNS[9] not in html.split('id="split-1"')[1].split("</div>")[0]
    # an explicit list typed in the form, one job a line
    form.update({"b1.split": f"{LFNS[0]} {LFNS[5]}\n{LFNS[2]}"})
    html = client.post("/submit/expert", data=form).get_data(as_text=True)
    assert "by the given list" in html and "<strong>2</strong> slice(s)" in html
    # Confirm (its hidden fields carry the typed list, lines and all): the jobs hold those slices
    confirm = forms(html)["confirm-form"]
    confirm.check("Automatic Submission", False)
    assert client.post("/submit/expert", data=confirm.data("Confirm")).status_code == 201
    made = api.get("/jobs", query_string={"request": str(request_id), "sort": "runnum"}).json["jobs"]
    assert [d["paths"] for d in inputs_of(api, [j["id"] for j in made])] == [[LFNS[0], LFNS[5]], [LFNS[2]]]
    job_id = bulk_submit(api, request_id)["job_ids"][2]   # the files no job has: 1 3 4, 6 7 8, 9
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert 'id="job-input"' in html and "1 file(s), the job" in html and LFNS[9] in html
    html = client.get(f"/requests/{request_id}").get_data(as_text=True)
    assert "split: 3 file(s) per job" in html


def test_migration_13_adds_the_split_to_a_database_that_has_requests_and_jobs(api, production, db_url):
    """A database from before splitting (the two columns dropped, version 13 not recorded) gets them from
    `sbk init-db`; its requests are not split and its jobs take their request's input, as before."""
    from server import db
    from server import models as m
    from .test_migrations import sbk
    old_job = bulk_submit(api, production["request"]["id"], runs=1, events=100)["job_ids"][0]
    with db.connection():
        for model, column in ((m.Request, "files_per_job"), (m.Job, "input_paths")):
            m.database.execute_sql(f"ALTER TABLE {model._meta.table_name} DROP COLUMN {column}")
        m.SchemaVersion.delete().where(m.SchemaVersion.version == 13).execute()
    db.database.close()
    upgraded = sbk("init-db", "--db", db_url)
    assert upgraded.returncode == 0 and "13" in upgraded.stdout, upgraded.stdout + upgraded.stderr
    assert api.get(f"/requests/{production['request']['id']}").json["files_per_job"] == 0
    assert api.get(f"/jobs/{old_job}").json["input"] == {"mode": "NONE", "paths": [], "split": False}
    request_id = split_request(api, production, "AfterUpgrade")
    assert len(bulk_submit(api, request_id)["job_ids"]) == 4


def test_sbk_bulks_may_leave_runs_out_and_ask_for_repeated_slices(tmp_path):
    assert parse_bulk("request=7,sites=A+B,events=5,repeat") == {
        "test": False, "log_to_db": False, "request": 7, "sites": ["A", "B"], "events": 5, "repeat_slices": True}
    good = tmp_path / "split.json"
    good.write_text('[["lfn:/a/1"], ["lfn:/a/2", "lfn:/a/3"]]')
    assert read_split_list(str(good)) == [["lfn:/a/1"], ["lfn:/a/2", "lfn:/a/3"]]
    for text in ("[[", '{"a": 1}'):
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(BadInput, match="--split-list"):
            read_split_list(str(bad))
    with pytest.raises(BadInput, match="--split-list"):
        read_split_list(str(tmp_path / "missing.json"))
