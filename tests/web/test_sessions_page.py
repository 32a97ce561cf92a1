"""Session management on the web desk, clicked as a person would (fields by label, buttons by text) through
the Flask test client, SQLite and PostgreSQL: a session with parameters, releases added, edited, retired
and restored under the rules of server/sessions.py, allowed values kept while used, privileges, CSRF."""
import re

import pytest

from tests.server.conftest import Api, new_token

from .conftest import sign_in
from .test_sites_page import buttons, click, find_form

RELEASE = {"Release name": "FullSimApp", "Version": "V1.0", "Revision": "7",
           "Tarball LFN": "lfn:/grid/superbvo.org/production/FullSim/V1.0.tgz", "Adler32": "0a1b2c3d",
           "Workdir": "FullSim/V1.0", "Executable": "bin/FullSim",
           "Environment variables": "BFROOT=/opt/superb\nG4DATA = /opt/g4"}


@pytest.fixture()
def manager(client, data):
    assert sign_in(client, data["token"]).status_code == 302
    return client


def session_api(client, data, name):
    return Api(client, data["token"]).get(f"/sessions/{name}").json


def add_release(client, fill=RELEASE):
    return click(client, "/sessions/FullSim", "Add release", fill)


def make_fullsim(client):
    r = click(client, "/sessions", "Create session", {
        "Session name": "FullSim", "Payload module": "fullsim", "Description": "Geant4 <b>full</b> simulation",
        "Parameter 1 name": "Generator", "Parameter 1 allowed values": "B0B0bar\nBpBm\n",
        "Parameter 2 name": "Geometry"})
    assert r.status_code == 302 and r.location == "/sessions/FullSim", r.get_data(as_text=True)[-800:]
    return r


def test_a_manager_creates_a_session_with_parameters(manager, data, client):
    r = make_fullsim(manager)
    made = session_api(client, data, "FullSim")
    assert (made["payload_module"], made["description"]) == ("fullsim", "Geant4 <b>full</b> simulation")
    assert made["parameters"] == [{"name": "Generator", "allowed": ["B0B0bar", "BpBm"]},
                                  {"name": "Geometry", "allowed": []}]
    page = manager.get(r.location).get_data(as_text=True)
    assert "Session FullSim created." in page and "Geant4 &lt;b&gt;full&lt;/b&gt; simulation" in page
    assert re.search(r'<tr id="parameter-Geometry"><td>Geometry</td>\s*<td><i>any value</i>', page)
    listing = manager.get("/sessions").get_data(as_text=True)
    assert ">FullSim</a>" in listing and "Generator, Geometry" in listing
    # more parameter rows without JavaScript
    assert "Parameter 6 name" in manager.get("/sessions?slots=6").get_data(as_text=True)
    # refused: the same name (409), values without a name (400): the reason, what was typed kept
    r = click(manager, "/sessions", "Create session", {"Session name": "FullSim", "Description": "twice"})
    page = r.get_data(as_text=True)
    assert r.status_code == 409 and "session FullSim already exists" in page and ">twice</textarea>" in page
    r = click(manager, "/sessions", "Create session", {"Session name": "Other", "Parameter 2 allowed values": "x"})
    assert r.status_code == 400 and "parameter row 2 has allowed values but no name" in r.get_data(as_text=True)
    # the description and payload module change
    r = click(manager, "/sessions/FullSim", "Save session", {"Payload module": "fullsim2", "Description": ""})
    assert r.status_code == 302 and session_api(client, data, "FullSim")["payload_module"] == "fullsim2"
    assert session_api(client, data, "FullSim")["description"] == ""


def test_parameters_are_added_and_a_used_allowed_value_is_not_taken_away(manager, data, client):
    make_fullsim(manager)
    r = click(manager, "/sessions/FullSim", "Add parameter", {"Parameter name": "Background",
                                                              "Allowed values": "NoBkg\nMixBkg"})
    assert r.status_code == 302
    assert session_api(client, data, "FullSim")["parameters"][2] == {"name": "Background",
                                                                     "allowed": ["NoBkg", "MixBkg"]}
    r = click(manager, "/sessions/FullSim", "Save allowed values", {"Allowed values of Generator": "B0B0bar\nBpBm\nTau"},
              name="Generator")
    assert r.status_code == 302
    assert session_api(client, data, "FullSim")["parameters"][0]["allowed"] == ["B0B0bar", "BpBm", "Tau"]
    # FastSim's request uses Analysis = HadRecoilCocktail: taking it away is refused, on the page and the API
    req = data["request"]["id"]
    r = click(manager, "/sessions/FastSim", "Save allowed values", {"Allowed values of Analysis": "Generics"},
              name="Analysis")
    page = r.get_data(as_text=True)
    assert r.status_code == 409 and f"request {req} of production {data['production']}" in page
    assert 'role="alert"' in page.split('id="parameter-Analysis"')[1].split("</tr>")[0]   # beside its form
    assert ">Generics</textarea>" in page
    assert session_api(client, data, "FastSim")["parameters"][0]["allowed"] == ["HadRecoilCocktail", "Generics"]


def test_a_release_is_added_edited_retired_and_restored(manager, data, client):
    make_fullsim(manager)
    r = add_release(manager)
    assert r.status_code == 302
    (sw,) = session_api(client, data, "FullSim")["software"]
    assert (sw["name"], sw["version"], sw["revision"], sw["exe"]) == ("FullSimApp", "V1.0", 7, "bin/FullSim")
    assert sw["env"] == {"BFROOT": "/opt/superb", "G4DATA": "/opt/g4"} and sw["retired"] is False
    assert "Release FullSimApp V1.0 rev 7 added." in manager.get(r.location).get_data(as_text=True)
    # refused: the same version and revision (409), an environment line without '=' (400), typed values kept
    r = add_release(manager)
    assert r.status_code == 409 and "already has release V1.0 7" in r.get_data(as_text=True)
    r = add_release(manager, {**RELEASE, "Revision": "8", "Environment variables": "JUSTANAME"})
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and "NAME=value" in page and 'value="8"' in page
    # edit (no production uses it): every field, the environment as lines
    edit = f"/sessions/FullSim/software/{sw['id']}"
    form, _ = find_form(manager.get(edit).get_data(as_text=True), "Save release")
    assert {f["name"]: f["value"] for f in form.fields}["env"] == "BFROOT=/opt/superb\nG4DATA=/opt/g4"
    r = click(manager, edit, "Save release", {"Executable": "bin/FullSim2", "Environment variables": ""})
    assert r.status_code == 302
    (sw,) = session_api(client, data, "FullSim")["software"]
    assert (sw["exe"], sw["env"], sw["revision"]) == ("bin/FullSim2", {}, 7)
    # retire, shown as such, restore
    assert click(manager, "/sessions/FullSim", "retire").status_code == 302
    page = manager.get("/sessions/FullSim").get_data(as_text=True)
    row = page.split(f'<tr id="release-{sw["id"]}" class="retired">')[1].split("</tr>")[0]
    assert '<td class="no">retired</td>' in row and "restore" in buttons(page)
    assert session_api(client, data, "FullSim")["software"][0]["retired"] is True
    assert "(+1 retired)" in manager.get("/sessions").get_data(as_text=True)
    assert click(manager, "/sessions/FullSim", "restore").status_code == 302
    assert session_api(client, data, "FullSim")["software"][0]["retired"] is False


def test_a_release_an_open_production_uses_is_not_retired_nor_edited(manager, data, client):
    api = Api(client, data["token"])
    (sw,) = session_api(client, data, "FastSim")["software"]
    r = click(manager, "/sessions/FastSim", "retire")
    page = r.get_data(as_text=True)
    assert r.status_code == 409 and f"used by the open production {data['production']}" in page
    assert session_api(client, data, "FastSim")["software"][0]["retired"] is False
    # no edit form for a used release, and a forged edit is refused by the core
    edit = f"/sessions/FastSim/software/{sw['id']}"
    page = manager.get(edit).get_data(as_text=True)
    assert "Save release" not in buttons(page) and "it is not edited" in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = manager.post(edit, data={"csrf": csrf, "name": "X", "version": "V9", "lfn": sw["lfn"], "adler32": sw["adler32"],
                                 "workdir": "w", "exe": "e"})
    assert r.status_code == 409 and "is used by production" in r.get_data(as_text=True)
    # closed: it retires (from its own page too) and comes back
    assert api.patch(f"/productions/{data['production']}", json={"status": "closed"}).status_code == 200
    r = click(manager, edit, "retire")
    assert r.status_code == 302 and session_api(client, data, "FastSim")["software"][0]["retired"] is True
    assert "Retired" in manager.get(edit).get_data(as_text=True)
    assert click(manager, edit, "restore").status_code == 302
    assert session_api(client, data, "FastSim")["software"][0]["retired"] is False


def actions(sw_id):
    return [("/sessions", {"name": "X"}),
            ("/sessions/FastSim/settings", {"description": "x"}),
            ("/sessions/FastSim/parameters", {"name": "Extra"}),
            ("/sessions/FastSim/software", {"name": "A", "version": "V", "lfn": "lfn:/a.tgz", "adler32": "00000000",
                                            "workdir": "w", "exe": "e"}),
            (f"/sessions/FastSim/software/{sw_id}", {"exe": "x"}),
            (f"/sessions/FastSim/software/{sw_id}/retired", {"value": "true"})]


@pytest.mark.parametrize("groups", [["Shift"], ["webui"]])
def test_without_create_productions_there_are_no_buttons_and_every_action_is_403(client, data, groups):
    (sw,) = session_api(client, data, "FastSim")["software"]
    assert sign_in(client, new_token("someone", groups)).status_code == 302
    for url in ("/sessions", "/sessions/FastSim", f"/sessions/FastSim/software/{sw['id']}"):
        page = client.get(url).get_data(as_text=True)
        assert not buttons(page) - {"Sign out"}, (url, buttons(page))
        assert "Session name" not in page and "Release name" not in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/sessions").get_data(as_text=True)).group(1)
    for url, form in actions(sw["id"]):
        r = client.post(url, data={"csrf": csrf, **form})
        assert r.status_code == 403 and "create-productions" in r.get_data(as_text=True), url
    fastsim = session_api(client, data, "FastSim")
    assert len(fastsim["parameters"]) == 4 and len(fastsim["software"]) == 1 and fastsim["description"] == ""


def test_every_action_needs_the_forms_csrf_token(manager, data, client):
    (sw,) = session_api(client, data, "FastSim")["software"]
    for url, form in actions(sw["id"]):
        assert manager.post(url, data=form).status_code == 400, url
        assert manager.post(url, data={**form, "csrf": "forged"}).status_code == 400, url
    fastsim = session_api(client, data, "FastSim")
    assert len(fastsim["parameters"]) == 4 and fastsim["software"][0]["retired"] is False


def test_a_release_in_a_shared_area_and_the_sessions_image_through_the_forms(manager, data, client):
    """The forms take a release's shared area instead of a tarball, and the session's container image."""
    make_fullsim(client)
    area = {k: v for k, v in RELEASE.items() if k not in ("Tarball LFN", "Adler32")}
    r = add_release(client, dict(area, **{"Or a shared area": "/cvmfs/superbvo.org/FullSim/V1.0"}))
    assert r.status_code == 302, r.get_data(as_text=True)[-800:]
    (release,) = session_api(client, data, "FullSim")["software"]
    assert (release["path"], release["lfn"], release["adler32"]) == ("/cvmfs/superbvo.org/FullSim/V1.0", None, None)
    assert "shared area /cvmfs/superbvo.org/FullSim/V1.0" in client.get("/sessions/FullSim").get_data(as_text=True)
    r = click(client, "/sessions/FullSim", "Save session", {"Container image": "/cvmfs/unpacked.cern.ch/el9"})
    assert r.status_code == 302
    assert session_api(client, data, "FullSim")["container_image"] == "/cvmfs/unpacked.cern.ch/el9"
    refused = click(client, "/sessions/FullSim", "Save session", {"Container image": "relative/el9"})
    assert refused.status_code == 400 and "absolute path" in refused.get_data(as_text=True)


def test_step_templates_are_added_shown_and_removed_while_unused(manager, data, client):
    """A session's step templates (issue 15): added from the session's page, refused in one line when a
    request chooses one, removed once unused."""
    r = click(manager, "/sessions/FastSim", "Add step", {
        "Step name": "dq", "Payload module": "dq", "Default parameters": "min_events = 10\n",
        "Arguments": "bin/check-outputs\n--strict"})
    assert r.status_code == 302, r.get_data(as_text=True)[-600:]
    steps = session_api(client, data, "FastSim")["steps"]
    assert steps == [{"name": "dq", "module": "dq", "parameters": {"min_events": "10"},
                      "args": ["bin/check-outputs", "--strict"]}]
    page = manager.get("/sessions/FastSim").get_data(as_text=True)
    assert "Step dq added." in page and re.search(r'<tr id="step-dq"><td>dq</td><td>dq</td>', page)
    r = click(manager, "/sessions/FastSim", "Add step", {"Step name": "bad name", "Payload module": "dq"})
    assert r.status_code == 400 and "name" in r.get_data(as_text=True)
    api = Api(client, data["token"])
    req = api.get("/requests", query_string={"production": "2010_July"}).json["requests"][0]
    made = api.post("/requests", json={
        "production": "2010_July", "parameters": dict(req["parameters"], Generator="StepsOnWeb"),
        "output_lfn": req["output_lfn"] + "/web", "output_sites": req["output_sites"], "steps": ["dq"]})
    assert made.status_code == 201, made.json
    r = click(manager, "/sessions/FastSim", "remove", {})
    assert r.status_code == 409 and "is chosen by request" in r.get_data(as_text=True)
    assert session_api(client, data, "FastSim")["steps"][0]["name"] == "dq"
