"""A newcomer's whole production on the web desk, by clicking only, in headless Chromium.

Real parts: `sbk serve` with its local backend, a real XRootD SE holding the toy release (put there
by the fixture, as a release manager would), `severus run` started by the server for each job. The
newcomer has a Developer token and an empty database; everything else is made on the pages: site,
session with its parameters and release, production, two requests (the second imported from the
first and changed: the duplicate warning appears, then goes), an expert submission of two bulks (one
a test bulk by parameter values) whose summary is the seed's table, confirmed with automatic
submission; the jobs run and end done; the monitor filters them by a parameter; a job shows its
outputs and log; the site is disabled and a new submission to it is refused on the page with the
reason. Fields are found by their label and buttons by their text, as a person finds them.
Screenshots of every page land in the run's temp dir (desk/*.png).
"""
import subprocess

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from server import demo as d
from server.toy_release import build_toy_release
from tests import waiting
from tests.test_wrapper_with_server import ROOT, Sbk

from .test_browser import browser, sign_in, wait_for  # noqa: F401  (fixture used by name)

pytestmark = pytest.mark.timeout(600)

PRODUCTION = "2026_Desk"
SITE = d.SITE
PARAMS = {"Analysis": ["HadRecoilCocktail", "Generics"], "Generator": ["B0B0bar_SL", "BpBm_generic"],
          "Geometry": ["DG_4"], "Background": ["MixSuperbBkg_NoPair.tcl", "PacProduction.tcl"]}
OUTPUT = f"lfn:{d.LFN_PREFIX}/production/FastSim/{PRODUCTION}/output"
# The seed's summary table (seed 000, EXPERT INIT): its columns in its order.
SEED_SUMMARY_COLUMNS = ["Set", "#Jobs", "Site", "First RUNNUM", "Last RUNNUM", "#Events", "Analysis",
                        "Generator", "Geometry", "Background", "Target Site(s)", "Log in DB"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An empty server with the local backend, the SE with the toy release on it; (url, token, release)."""
    base = tmp_path_factory.mktemp("desk")
    demo = d.Demo(base=base)
    sbk = Sbk(base)
    sbk.env.update(SBK_BACKEND_SITE_CONFIGS=str(base / "site_configs"), SBK_BACKEND_SANDBOX_DIR=str(base / "sandboxes"),
                   SBK_BACKEND_LOCAL_MAX_PARALLEL="4", SBK_CLEANUP_INTERVAL_S="0")
    try:
        site_config = d.start_storage(demo, d.Progress())
        out = subprocess.run(d.sbk_command() + ["user", "add", "newcomer", "--groups", "Developer"],
                             env=sbk.env, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        sbk.token = out.stdout.strip().splitlines()[-1]
        sbk.start()
        release = build_toy_release(base)
        # the release manager's step, outside the desk: the tarball on the SE and in the catalog
        d.upload_release(release, demo.se_door, d.Api(sbk.url, sbk.token))
        yield sbk.url, sbk.token, release, d.Api(sbk.url, sbk.token)
    finally:
        sbk.stop()
        demo.stop()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("desk-shots")


class Person:
    """What a person does on a page: read labels, type, tick, choose, press buttons by their text."""

    def __init__(self, driver, url, shots):
        self.driver, self.url, self.shots = driver, url, shots

    def open(self, path):
        self.driver.get(self.url + path)

    def scope(self, within=None):
        return self.driver if within is None else self.driver.find_element(By.CSS_SELECTOR, within)

    def field(self, label, within=None):
        """The input a <label> with this text names."""
        shown = [x for x in self.scope(within).find_elements(By.XPATH, ".//label") if x.is_displayed()]
        # a site's box is labelled with its name and the seed's mark after it ("DEMO-T1 ✓")
        labels = ([x for x in shown if x.text.strip() == label]
                  or [x for x in shown if x.text.strip().startswith(label + " ")])
        assert labels, f"no label {label!r} on {self.driver.current_url}"
        return self.driver.find_element(By.ID, labels[0].get_attribute("for"))

    def type(self, label, text, within=None):
        box = self.field(label, within)
        box.clear()
        box.send_keys(str(text))

    def choose(self, label, option, within=None):
        Select(self.field(label, within)).select_by_visible_text(option)

    def choose_containing(self, label, part, within=None):
        select = Select(self.field(label, within))
        texts = [o.text for o in select.options if part in o.text]
        assert texts, f"no option with {part!r} in {label!r}: {[o.text for o in select.options]}"
        select.select_by_visible_text(texts[0])

    def tick(self, label, on=True, within=None):
        box = self.field(label, within)
        if box.is_selected() != on:
            box.click()

    def press(self, text, within=None):
        buttons = [b for b in self.scope(within).find_elements(By.XPATH, ".//button | .//input[@type='submit']")
                   if (b.text or b.get_attribute("value") or "").strip() == text and b.is_displayed()]
        assert buttons, f"no button {text!r} on {self.driver.current_url}"
        buttons[0].click()

    def press_summary(self, text):
        """Open a <details> by its summary, as a person clicks the disclosure triangle (open stays open)."""
        summary = self.driver.find_element(By.XPATH, f"//summary[normalize-space()='{text}']")
        if not summary.find_element(By.XPATH, "..").get_attribute("open"):
            summary.click()

    def text(self, css="main"):
        return self.driver.find_element(By.CSS_SELECTOR, css).text

    def sees(self, words, css="main", timeout=20):
        return wait_for(lambda: words in self.text(css), timeout)

    def shot(self, name):
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))


def test_a_newcomers_whole_production_by_clicking(world, browser, shots):  # noqa: F811
    url, token, release, api = world
    me = Person(browser, url, shots)
    browser.delete_all_cookies()
    sign_in(browser, url, token, "/")
    me.sees("Hi newcomer")
    me.shot("home")

    # --- site management: the site the SE's configuration names
    me.open("/sites")
    me.type("Site name", SITE)
    me.type("Bunch dimension", 4)
    me.press("Create site")
    me.sees(SITE)
    me.shot("sites")

    # --- session management: the session, its parameters, its release
    me.open("/sessions")
    me.type("Session name", "FastSim")
    me.type("Payload module", "fastsim")
    for n, (name, allowed) in enumerate(PARAMS.items(), start=1):
        me.type(f"Parameter {n} name", name)
        me.type(f"Parameter {n} allowed values", "\n".join(allowed))
    me.press("Create session")
    me.sees("FastSim")
    me.open("/sessions/FastSim")
    me.type("Release name", "PacProductionApp")
    me.type("Version", "V0.2.5")
    me.type("Revision", 311)
    me.type("Tarball LFN", d.SOFTWARE_LFN)
    me.type("Adler32", release.adler32)
    me.type("Workdir", release.workdir)
    me.type("Executable", release.exe)
    me.press("Add release")
    me.sees("V0.2.5")
    me.shot("session")

    # --- productions
    me.open("/productions")
    me.type("Production series name", PRODUCTION)
    me.choose("Session", "FastSim")
    wait_for(lambda: any("V0.2.5" in o.text for o in Select(me.field("Software release")).options))
    me.choose_containing("Software release", "V0.2.5")
    me.press("Create production")
    me.sees(PRODUCTION)
    me.shot("productions")

    # --- requests: a first one by hand, a second imported from it and changed
    me.open(f"/requests?production={PRODUCTION}")
    me.sees(f"Create a request in {PRODUCTION}")
    first = {"Analysis": "HadRecoilCocktail", "Generator": "B0B0bar_SL", "Geometry": "DG_4",
             "Background": "MixSuperbBkg_NoPair.tcl"}
    for name, value in first.items():
        me.choose(name, value, within="#create-request")
    me.type("Min runnum", 40000000)
    me.type("Events per job", 50)
    me.type("Max wallclock (s)", 600)
    me.type("Output directory LFN", f"{OUTPUT}/first")
    me.tick(SITE)
    me.press("Create request")
    made = wait_for(lambda: api.call("GET", "/requests", params={"production": PRODUCTION})["requests"])
    assert made[0]["parameters"] == first

    me.open(f"/requests?production={PRODUCTION}")
    me.choose("Import from production", PRODUCTION)
    wait_for(lambda: len(Select(me.field("Request to import")).options) > 1)
    me.choose_containing("Request to import", "B0B0bar_SL")
    me.press("Import")
    warning = "A production request with the selected parameters already exists!"
    me.sees(warning)                                     # the imported parameters are the first request's
    me.shot("request-duplicate-warning")
    me.choose("Generator", "BpBm_generic", within="#create-request")
    wait_for(lambda: warning not in me.text())           # a new choice: the warning goes
    me.type("Output directory LFN", f"{OUTPUT}/second")
    me.press("Create request")
    # the click returns before the form's POST is answered: wait for the request, as a person would
    second = wait_for(lambda: [r for r in api.call("GET", "/requests", params={"production": PRODUCTION})["requests"]
                               if r["parameters"]["Generator"] == "BpBm_generic"])[0]
    assert second["events_per_job"] == 50 and second["min_runnum"] == 40000000   # imported, then changed
    me.open(f"/requests/{second['id']}")
    me.press("Set valid")
    wait_for(lambda: api.call("GET", f"/requests/{second['id']}")["status"] == "valid")
    me.shot("request")

    # --- expert init: a main bulk on the second request and a test bulk by parameter values
    main_bulk(me, runs=2)
    me.tick("Log files to be stored in the bookkeeping database", within="#bulk-1")
    me.press("Add bulk")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#bulk-2"))
    me.tick("Test job?", within="#bulk-2")
    for name, value in {"Analysis": "Generics", "Generator": "B0B0bar_SL", "Geometry": "DG_4",
                        "Background": "PacProduction.tcl"}.items():
        me.choose(name, value, within="#bulk-2")
    me.tick(SITE, within="#bulk-2")
    me.type("Number of runs (jobs per site)", 1, within="#bulk-2")
    me.type("Number of events (per job)", 10, within="#bulk-2")
    me.press("Submit data and generate summary")
    me.sees("PRODUCTION DATA - SUMMARY")
    me.shot("expert-summary")
    summary = me.text()
    assert "The UI will launch 2 set(s)" in summary and "a total of 3 jobs, 110 events" in summary
    tables = browser.find_elements(By.CSS_SELECTOR, "table.bulk-summary")
    assert len(tables) == 2
    for table in tables:
        assert [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")] == SEED_SUMMARY_COLUMNS
    main_rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                 for tr in tables[0].find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert main_rows[0][:3] == ["1", "2", SITE] and main_rows[0][5] == "100 (50 ea.)"
    assert main_rows[0][6:10] == ["HadRecoilCocktail", "BpBm_generic", "DG_4", "MixSuperbBkg_NoPair.tcl"]
    assert main_rows[0][10:] == [SITE, "yes"]
    me.tick("Automatic Submission")
    me.choose("Batch backend", "local")
    me.press("Confirm")
    me.sees("Submission done", timeout=60)
    me.shot("expert-result")

    # --- the jobs run (severus run, started by the server's local backend) and end done
    def all_done():
        jobs = api.call("GET", "/jobs", params={"production": PRODUCTION, "per_page": 50})["jobs"]
        assert not [j for j in jobs if j["status"] in ("failed", "sys-failed", "timeout")], jobs
        return len(jobs) == 2 and all(j["status"] == "done" for j in jobs)
    waiting.poll(all_done, 240, "the main bulk's jobs to end done")

    # --- the job monitor: done, filtered by a parameter
    me.open(f"/jobs?production={PRODUCTION}")
    me.press_summary("Job monitor filters")
    me.tick("BpBm_generic")
    me.press("Search jobs")
    wait_for(lambda: "param.Generator=BpBm_generic" in browser.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-job]")
    assert len(rows) == 2
    assert all("done" in r.find_element(By.CSS_SELECTOR, "[data-col='status']").text for r in rows)
    me.shot("job-monitor")

    # --- a job's details: its outputs and its log
    runnum = rows[0].find_element(By.CSS_SELECTOR, "[data-col='runnum']").text.split()[0]
    browser.find_element(By.LINK_TEXT, runnum).click()
    wait_for(lambda: browser.find_element(By.TAG_NAME, "h1").text.startswith(f"Job {runnum}"))
    outputs = browser.find_elements(By.CSS_SELECTOR, "#outputs tbody tr")
    assert outputs and "root://" in outputs[0].text
    assert browser.find_element(By.ID, "log-links").text.startswith("attempt 1")
    me.shot("job")

    # --- the site is disabled for the session; a new submission to it is refused with the reason
    me.open(f"/sites/{SITE}")
    me.press("disable")
    wait_for(lambda: not api.call("GET", f"/sites/{SITE}")["sessions"][0]["enabled"])
    me.shot("site")
    main_bulk(me, runs=1)
    marks = me.text("#bulk-1")
    assert "✗" in marks                                   # the seed's mark: the site takes nothing now
    me.press("Submit data and generate summary")
    error = me.sees(f"site {SITE} is disabled for session FastSim")
    assert error
    assert browser.find_element(By.ID, "refused").text
    me.shot("expert-refused")
    assert len(api.call("GET", "/jobs", params={"production": PRODUCTION, "per_page": 50})["jobs"]) == 2

    # --- the pages not visited above, for the record
    for name, path in (("sessions", "/sessions"), ("requests", f"/requests?production={PRODUCTION}"),
                       ("shift-init", "/submit/shift"), ("error-codes", "/error-codes"), ("people", "/people"),
                       ("charts", "/charts"), ("home-after", "/")):
        me.open(path)
        wait_for(lambda: browser.find_elements(By.TAG_NAME, "h1"))
        assert "Internal" not in me.text() and "403" not in browser.title, path
        me.shot(name)


def main_bulk(me, runs):
    """Expert init with bulk 1 on the second request: runs jobs of 50 events at SITE."""
    me.open("/submit/expert")
    me.choose("Select a production from list", PRODUCTION)
    wait_for(lambda: any("BpBm_generic" in o.text for o in Select(me.field("Request", "#bulk-1")).options))
    me.choose_containing("Request", "BpBm_generic", within="#bulk-1")
    me.tick(SITE, within="#bulk-1")
    me.type("Number of runs (jobs per site)", runs, within="#bulk-1")
    me.type("Number of events (per job)", 50, within="#bulk-1")


def test_a_shifter_and_a_watcher_in_the_browser(world, browser, shots):  # noqa: F811
    """A shifter gets the 403 page on expert init and on a site's edit; a monitoring user sees no action."""
    url, _, _, api = world
    shifter = api.call("POST", "/users", json={"name": "shifter", "groups": ["Shift"]})["token"]
    watcher = api.call("POST", "/users", json={"name": "watcher", "groups": ["webui"]})["token"]
    me = Person(browser, url, shots)
    browser.delete_all_cookies()
    sign_in(browser, url, shifter, "/submit/expert")
    me.sees("403")
    assert "expert-submission" in me.text()
    me.shot("shifter-expert-403")
    me.open("/submit/shift")
    me.sees("Reset sites")                                   # his own page opens
    assert "Expert init" not in me.text("header nav")

    browser.delete_all_cookies()
    sign_in(browser, url, watcher, "/productions")
    me.sees(PRODUCTION)
    for path in ("/productions", f"/requests?production={PRODUCTION}", f"/sites/{SITE}", "/sessions/FastSim",
                 "/jobs"):
        me.open(path)
        buttons = [b.text for b in browser.find_elements(By.CSS_SELECTOR, "main button, main input[type=submit]")
                   if b.is_displayed()]
        actions = [b for b in buttons if b in ("Create production", "Close", "Create request", "Set valid",
                                               "Delete", "disable", "enable", "Save site info", "Add release",
                                               "Kill", "Resubmit")]
        assert not actions, f"{path} offers {actions} to a monitoring user"
    me.shot("watcher-sites")
