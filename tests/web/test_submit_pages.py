"""Expert init and shift init through the Flask test client, clicking as a person would (SQLite and PostgreSQL)."""
import re
import sys

import pytest

from server import create_app, db
from tests.server.conftest import Api, event, new_token

from .conftest import populate, sign_in
from .formparse import forms

PARAMS = ("Analysis", "Generator", "Geometry", "Background")
HEADERS = ["Set", "#Jobs", "Site", "First RUNNUM", "Last RUNNUM", "#Events", *PARAMS, "Target Site(s)", "Log in DB"]
LFN = "lfn:/grid/superbvo.org/production/FastSim"
# Stand-in for `severus run` under the local backend: exits at once without reporting.
FAKE_WRAPPER = "import sys\nsys.exit(0)\n"


@pytest.fixture()
def app(db_url, tmp_path):
    """The server tests' app with the local backend able to run (a stand-in wrapper, a site config)."""
    wrapper = tmp_path / "fake_severus.py"
    wrapper.write_text(FAKE_WRAPPER)
    configs = tmp_path / "site_configs"
    configs.mkdir()
    (configs / "INFN-T1.toml").write_text('name = "INFN-T1"\n')
    app = create_app({"DB": db_url, "PUBLIC_URL": "http://sbk.test:8080", "HEARTBEAT_S": 60,
                      "BACKEND_WRAPPER": str(wrapper), "BACKEND_PYTHON": sys.executable,
                      "BACKEND_SANDBOX_DIR": str(tmp_path / "sandboxes"), "BACKEND_SITE_CONFIGS": str(configs)})
    app.testing = True
    yield app
    close_all = getattr(db.database.obj, "close_all", None)
    if close_all:
        close_all()
    else:
        db.database.close()


@pytest.fixture()
def world(client):
    token = new_token("dev", ["Developer"])
    return dict(populate(Api(client, token)), token=token, api=Api(client, token))


@pytest.fixture()
def expert(client, world):
    assert sign_in(client, world["token"]).status_code == 302
    return client


@pytest.fixture()
def shifter(client, world):
    token = new_token("shifter", ["Shift"])
    assert sign_in(client, token).status_code == 302
    client.token = token
    return client


def text(html):
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def table(html, table_id):
    """A table's rows as lists of cell texts (header row first)."""
    body = html.split(f'id="{table_id}"')[1].split("</table>")[0]
    return [[text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def fill_bulk(form, n, request="", sites=(), runs="1", events="", test=False, log=False, params=None):
    within = f"Bulk {n}"
    form.set("Request", str(request), within)
    for label in [lab for lab in form.checked(within) if lab.startswith("INFN")]:
        form.check(label, False, within)
    for site in sites:
        form.check(site, True, within)
    form.set("Number of runs", str(runs), within)
    if form.has("Number of events", within):
        form.set("Number of events", str(events), within)
        form.check("Test job?", test, within)
        form.check("Log files", log, within)
    for name, value in (params or {}).items():
        form.set(name, value, within)
    return form


def two_bulks(client, world):
    """Expert init filled as in the seed: a main bulk and a test bulk by parameter values; the summary page."""
    page = client.get("/submit/expert").get_data(as_text=True)
    f = forms(page)["submit-form"]
    fill_bulk(f, 1, world["request"]["id"], ("INFN-T1", "INFN-TORINO"), 10, 80000)
    page = client.post("/submit/expert", data=f.data("Add bulk")).get_data(as_text=True)
    f = forms(page)["submit-form"]
    assert f.field("Number of runs", "Bulk 1")["value"] == "10"          # typed values kept
    fill_bulk(f, 2, "", ("INFN-T1", "INFN-TORINO"), 1, 1, test=True, log=True,
              params={"Analysis": "HadRecoilCocktail", "Generator": "B0B0bar_Btag-HD_Cocktail",
                      "Geometry": "DG_4", "Background": "PacProduction.tcl"})
    r = client.post("/submit/expert", data=f.data("Submit data and generate summary"))
    assert r.status_code == 200, text(r.get_data(as_text=True))[:2000]
    return r.get_data(as_text=True)


def test_expert_init_summary_is_the_seeds_table_and_confirm_prepares_the_jobs(expert, world):
    page = two_bulks(expert, world)
    assert "The UI will launch 2 set(s) of normal jobs (a total of 22 jobs, 1600002 events) for the Production " \
           "2010_July with the following parameters:" in text(page)
    assert table(page, "production-summary") == [
        ["Production Series:", "2010_July"], ["Software:", "V0.2.5 311"],
        ["Test release:", f"{LFN}/2010_September/test_release/V0.2.5_SL-5.3_x86_64_rev311.tjz"]]
    main = ["HadRecoilCocktail", "B0B0bar_SL", "DG_4", "MixSuperbBkg_NoPair.tcl", "INFN-T1"]
    # the populated world used 10000003-10000006 for this request
    assert table(page, "bulk-summary-1") == [
        HEADERS,
        ["1", "10", "INFN-T1", "10000007", "10000016", "800000 (80000 ea.)", *main, "no"],
        ["1", "10", "INFN-TORINO", "10000017", "10000026", "800000 (80000 ea.)", *main, "no"],
        ["", "20", "", "", "", "1600000", "", "", "", "", "", ""]]
    test = ["HadRecoilCocktail", "B0B0bar_Btag-HD_Cocktail", "DG_4", "PacProduction.tcl", "INFN-T1"]
    assert table(page, "bulk-summary-2") == [
        HEADERS,
        ["2", "1", "INFN-T1", "10000027", "10000027", "1 (1 ea.)", *test, "yes"],
        ["2", "1", "INFN-TORINO", "10000028", "10000028", "1 (1 ea.)", *test, "yes"],
        ["", "2", "", "", "", "2", "", "", "", "", "", ""]]
    facts = text(page.split('id="request-facts-1">')[1].split("</div>")[0])
    assert facts == ("✓ Production Request exists! 2010_July Input mode: NONE Input path: - "
                     f"output directory's name: - output directory's lfn: {LFN}/2010_July/output/HadRecoilCocktail/DG_4/B0B0bar_SL")
    facts = text(page.split('id="request-facts-2">')[1].split("</div>")[0])
    assert facts.startswith("✚ Production Request will be created! 2010_July_test Input mode: NONE")
    assert facts.endswith(f"{LFN}/2010_July_test/output/HadRecoilCocktail/DG_4/B0B0bar_Btag-HD_Cocktail")
    api = world["api"]
    assert api.get("/jobs?request=%d&per_page=100" % world["request"]["id"]).json["total"] == 4   # a dry run

    confirm = forms(page)["confirm-form"]
    assert confirm.field("Automatic Submission")["checked"]          # the user's auto-sub (default on)
    confirm.check("Automatic Submission", False)
    r = expert.post("/submit/expert", data=confirm.data("Confirm"))
    assert r.status_code == 201, text(r.get_data(as_text=True))[:1000]
    done = r.get_data(as_text=True)
    assert "22 job(s) prepared on 2010_July" in text(done) and "No automatic submission" in text(done)
    assert ["1", "2010_July", str(world["request"]["id"]), "INFN-T1", "10", "10000007", "10000016"] \
        in table(done, "prepared-jobs")
    jobs = api.get("/jobs?runnum_from=10000007&runnum_to=10000028&per_page=100").json["jobs"]
    assert len(jobs) == 22 and {j["status"] for j in jobs} == {"prepared"}
    assert {j["production"] for j in jobs} == {"2010_July", "2010_July_test"}
    created = api.get("/requests?production=2010_July_test").json["requests"]
    assert any(r["parameters"]["Generator"] == "B0B0bar_Btag-HD_Cocktail" for r in created)
    link = re.search(r'href="(/jobs\?[^"]+)">Monitor them', done).group(1).replace("&amp;", "&")
    assert len(re.findall(r'<td data-col="runnum">', expert.get(link).get_data(as_text=True))) == 22
    # pressing Confirm again (or reloading) prepares nothing more
    again = expert.post("/submit/expert", data=confirm.data("Confirm"))
    assert again.status_code == 409 and "already confirmed" in again.get_data(as_text=True)
    assert api.get("/jobs?runnum_from=10000007&per_page=100").json["total"] == 22


def test_confirm_with_automatic_submission_shows_the_backends_output(expert, world):
    page = expert.get("/submit/expert").get_data(as_text=True)
    f = fill_bulk(forms(page)["submit-form"], 1, world["request"]["id"], ("INFN-T1", "INFN-TORINO"), 7, 100)
    page = expert.post("/submit/expert", data=f.data("Submit data and generate summary")).get_data(as_text=True)
    confirm = forms(page)["confirm-form"].set("Batch backend", "local")
    r = expert.post("/submit/expert", data=confirm.data("Confirm"))
    assert r.status_code == 201
    done = r.get_data(as_text=True)
    # INFN-T1 (bunch size 5) runs; INFN-TORINO has no site configuration here: its jobs stay prepared
    assert "Backend local: 7 of 14 job(s) submitted in 2 bunch(es), 1 bunch(es) refused" in text(done)
    bunches = table(done, "bunches")
    assert [row[:2] for row in bunches[1:]] == [["INFN-T1", "5"], ["INFN-T1", "2"]]
    assert "no site configuration INFN-TORINO.toml" in text(done)
    jobs = world["api"].get("/jobs?runnum_from=10000007&per_page=100").json["jobs"]
    by_site = {}
    for j in jobs:
        by_site.setdefault(j["site"], set()).add((j["status"] != "prepared", j["backend"]))
    assert by_site == {"INFN-T1": {(True, "local")}, "INFN-TORINO": {(False, None)}}
    gjids = {g for row in bunches[1:] for g in row[2].split()}
    assert gjids == {j["gjid"] for j in jobs if j["site"] == "INFN-T1"}


def test_add_and_remove_bulks_without_javascript_and_with_htmx(expert, world):
    page = expert.get("/submit/expert").get_data(as_text=True)
    f = forms(page)["submit-form"].set("Number of runs", "7", "Bulk 1")
    page = expert.post("/submit/expert", data=f.data("Add bulk")).get_data(as_text=True)
    page = expert.post("/submit/expert", data=forms(page)["submit-form"].data("Add bulk")).get_data(as_text=True)
    f = forms(page)["submit-form"].set("Number of runs", "3", "Bulk 3")
    page = expert.post("/submit/expert", data=f.data("Remove bulk 2", "Bulk 2")).get_data(as_text=True)
    assert re.findall(r"<legend>(Bulk \d+)</legend>", page) == ["Bulk 1", "Bulk 3"]
    f = forms(page)["submit-form"]
    assert f.field("Number of runs", "Bulk 1")["value"] == "7" and f.field("Number of runs", "Bulk 3")["value"] == "3"
    # htmx: "Add bulk" fetches the next row alone, "Remove" re-renders the form alone
    row = expert.get("/submit/expert/bulk?production=2010_July&bulk=1&bulk=3").get_data(as_text=True)
    assert "<legend>Bulk 4</legend>" in row and "<html" not in row and 'name="bulk" value="4"' in row
    r = expert.post("/submit/expert", data=f.data("Remove bulk 3", "Bulk 3"), headers={"HX-Request": "true"})
    assert "<html" not in r.get_data(as_text=True) and re.findall(r"<legend>(Bulk \d+)</legend>", r.get_data(as_text=True)) == ["Bulk 1"]


def test_select_all_supported_none_and_the_sites_marks(expert, world):
    api = world["api"]
    assert api.patch("/sites/INFN-TORINO", json={"sessions": {"FastSim": {"supported": False}}}).status_code == 200
    page = expert.get("/submit/expert").get_data(as_text=True)
    f = forms(page)["submit-form"]
    assert f.labels[f.field("INFN-T1", "Bulk 1")["id"]] == "INFN-T1 ✓"
    assert f.labels[f.field("INFN-TORINO", "Bulk 1")["id"]] == "INFN-TORINO ✗ (unsupported)"
    for button, ticked in (("select all", ["INFN-T1 ✓", "INFN-TORINO ✗ (unsupported)"]),
                           ("supported", ["INFN-T1 ✓"]), ("none", [])):
        page = expert.post("/submit/expert", data=f.data(button, "Bulk 1")).get_data(as_text=True)
        f = forms(page)["submit-form"]
        assert f.checked("Submission sites") == ticked, button
    fragment = expert.get("/submit/expert/sites?production=2010_July&n=1&choice=supported").get_data(as_text=True)
    assert re.findall(r'value="([^"]+)" checked', fragment) == ["INFN-T1"] and "<html" not in fragment


def test_a_submission_to_a_disabled_site_is_refused_with_the_reason_and_the_form_kept(expert, world):
    api = world["api"]
    assert api.patch("/sites/INFN-TORINO", json={"sessions": {"FastSim": {"enabled": False}}}).status_code == 200
    page = expert.get("/submit/expert").get_data(as_text=True)
    f = fill_bulk(forms(page)["submit-form"], 1, world["request"]["id"], ("INFN-TORINO",), 4, 100)
    r = expert.post("/submit/expert", data=f.data("Submit data and generate summary"))
    assert r.status_code == 409
    page = r.get_data(as_text=True)
    assert re.search(r'id="refused">site INFN-TORINO is disabled for session FastSim</p>', page)
    f = forms(page)["submit-form"]
    assert f.field("Number of runs", "Bulk 1")["value"] == "4" and f.checked("Submission sites") == ["INFN-TORINO ✗ (disabled)"]


def test_shift_init_offers_no_test_bulk_and_no_unsupported_site(shifter, world):
    api = world["api"]
    assert api.patch("/sites/INFN-TORINO", json={"sessions": {"FastSim": {"supported": False}}}).status_code == 200
    page = shifter.get("/submit/shift").get_data(as_text=True)
    f = forms(page)["submit-form"]
    for label in ("Test job?", "Analysis", "Number of events", "Log files", "Override site thresholds", "INFN-TORINO"):
        assert not f.has(label), label
    assert [v for v, _ in f.options("Request", "Bulk 1")] == ["", str(world["request"]["id"])]
    # a crafted form: the test flag is not read, the unsupported site refuses a main bulk
    data = f.set("Request", str(world["request"]["id"]), "Bulk 1").data("Submit data and generate summary")
    data.add("b1.test", "1")
    data.add("b1.sites", "INFN-TORINO")
    r = shifter.post("/submit/shift", data=data)
    assert r.status_code == 409 and "does not support session FastSim" in r.get_data(as_text=True)
    # the shifter's bulk: events per job are the request's
    f = fill_bulk(forms(page)["submit-form"], 1, world["request"]["id"], ("INFN-T1",), 2)
    page = shifter.post("/submit/shift", data=f.data("Submit data and generate summary")).get_data(as_text=True)
    assert table(page, "bulk-summary-1")[1][:6] == ["1", "2", "INFN-T1", "10000007", "10000008", "160000 (80000 ea.)"]
    confirm = forms(page)["confirm-form"].check("Automatic Submission", False)
    r = shifter.post("/submit/shift", data=confirm.data("Confirm"))
    assert r.status_code == 201 and "2 job(s) prepared" in text(r.get_data(as_text=True))


def over_failed_threshold(world):
    """INFN-TORINO (one failed job in the world) with a failed threshold of 1."""
    assert world["api"].patch("/sites/INFN-TORINO", json={"threshold_failed": 1}).status_code == 200
    return {"production": "2010_July", "bulks": [{"request": world["request"]["id"], "sites": ["INFN-TORINO"],
                                                  "runs": 1, "events": 100}]}


def test_reset_through_the_api_lets_a_site_over_its_failed_threshold_take_a_bulk(client, world):
    api, body = world["api"], over_failed_threshold(world)
    r = api.post("/submissions", json=body)
    assert r.status_code == 409 and r.json["error"] == "site-threshold", r.json
    shift = api.as_(new_token("shifter", ["Shift"]))
    assert api.as_(new_token("watcher", ["webui"])).post("/sites/INFN-TORINO/reset").status_code == 403
    assert shift.post("/sites/NOWHERE/reset").status_code == 404
    r = shift.post("/sites/INFN-TORINO/reset")
    assert r.status_code == 200 and r.json["failed_before"] == 1 and r.json["failed"] == 0, r.json
    failed_job = api.get(f"/jobs/{world['failed']}").json
    assert failed_job["status"] == "failed" and failed_job["error_code"] == 30      # the jobs are untouched
    r = shift.post("/submissions", json=body)
    assert r.status_code == 201, r.json
    activity = api.get("/activities?limit=5").json["activities"]
    assert any(a["type"] == "site-reset" and "INFN-TORINO" in a["info"] for a in activity), activity
    # a failure after the reset counts again
    job_id = r.json["job_ids"][0]
    wrapper = api.as_(api.post(f"/jobs/{job_id}/token").json["server"]["token"])
    wrapper.post(f"/jobs/{job_id}/events", json=event(1))
    assert wrapper.post(f"/jobs/{job_id}/events", json=event(2, "failed", code=30)).status_code == 200
    r = shift.post("/submissions", json=body)
    assert r.status_code == 409 and "since its reset" in r.json["message"], r.json


def test_reset_on_the_shift_page(shifter, world):
    body = over_failed_threshold(world)
    page = shifter.get("/submit/shift").get_data(as_text=True)
    assert ["INFN-TORINO", "1", "1", "-", "Reset INFN-TORINO"] in table(page, "site-failures")
    assert '<tr class="over"><td>INFN-TORINO</td>' in page
    reset = forms(page)["/submit/shift/reset/INFN-TORINO"]
    r = shifter.post("/submit/shift/reset/INFN-TORINO", data=reset.data("Reset INFN-TORINO"))
    assert r.status_code == 302 and r.location == "/submit/shift"
    page = shifter.get("/submit/shift").get_data(as_text=True)
    assert "Site INFN-TORINO reset" in page and table(page, "site-failures")[2][:3] == ["INFN-TORINO", "0", "1"]
    f = fill_bulk(forms(page)["submit-form"], 1, world["request"]["id"], ("INFN-TORINO",), 1)
    page = shifter.post("/submit/shift", data=f.data("Submit data and generate summary")).get_data(as_text=True)
    assert 'id="refusals"' not in page
    confirm = forms(page)["confirm-form"].check("Automatic Submission", False)
    assert shifter.post("/submit/shift", data=confirm.data("Confirm")).status_code == 201
    assert Api(shifter, shifter.token).post("/submissions", json=body).status_code == 201


def test_privileges(client, world):
    assert sign_in(client, new_token("watcher", ["webui"])).status_code == 302
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/").get_data(as_text=True)).group(1)
    for path in ("/submit/expert", "/submit/shift", "/submit/expert/bulk", "/submit/shift/sites?n=1&choice=all"):
        assert client.get(path).status_code == 403, path
    assert client.post("/submit/shift/reset/INFN-TORINO", data={"csrf": csrf}).status_code == 403
    assert client.post("/submit/shift", data={"csrf": csrf, "do": "summary"}).status_code == 403
    assert 'href="/submit/' not in client.get("/").get_data(as_text=True)
    client.post("/signout", data={"csrf": csrf})
    assert sign_in(client, new_token("shifter", ["Shift"])).status_code == 302
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/").get_data(as_text=True)).group(1)
    assert client.get("/submit/expert").status_code == 403
    assert client.post("/submit/expert", data={"csrf": csrf, "do": "summary"}).status_code == 403
    assert client.get("/submit/expert/bulk").status_code == 403
    assert client.get("/submit/shift").status_code == 200


def test_forms_without_the_csrf_token_are_refused(expert, world):
    assert expert.post("/submit/expert", data={"do": "summary", "production": "2010_July"}).status_code == 400
    assert expert.post("/submit/shift", data={"do": "confirm"}).status_code == 400
    assert expert.post("/submit/shift/reset/INFN-TORINO").status_code == 400
    assert world["api"].get("/sites/INFN-TORINO").json["thresholds"]["failed"] == 0


def test_threshold_refusals_are_shown_and_an_expert_may_override_them(expert, world):
    over_failed_threshold(world)
    page = expert.get("/submit/expert").get_data(as_text=True)
    f = fill_bulk(forms(page)["submit-form"], 1, world["request"]["id"], ("INFN-TORINO",), 1, 100)
    page = expert.post("/submit/expert", data=f.data("Submit data and generate summary")).get_data(as_text=True)
    assert "site INFN-TORINO: 1 failed jobs in 24 h reach its failed threshold 1" in text(
        page.split('id="refusals"')[1].split("</div>")[0])
    r = expert.post("/submit/expert", data=forms(page)["confirm-form"].data("Confirm"))
    assert r.status_code == 409 and 'id="refused">site INFN-TORINO: 1 failed jobs' in r.get_data(as_text=True)
    f = forms(r.get_data(as_text=True))["submit-form"].check("Override site thresholds")
    page = expert.post("/submit/expert", data=f.data("Submit data and generate summary")).get_data(as_text=True)
    confirm = forms(page)["confirm-form"].check("Automatic Submission", False)
    assert expert.post("/submit/expert", data=confirm.data("Confirm")).status_code == 201
