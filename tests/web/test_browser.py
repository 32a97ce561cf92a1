"""The pages in a real browser: headless Chromium (Debian's) driven by Selenium, against `sbk serve` with real data.

The data come from `sbk demo --keep` (jobs run by `severus run` on a real XRootD SE, outputs, transfers
and logs in the database) plus three jobs on a second site moved through the API with job tokens.
Screenshots land in the run's temp dir (browser/*.png).
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from server.demo import PRODUCTION, Api
from tests.server.conftest import event

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--window-size=1400,1000")
SECOND_SITE = "DEMO-T2"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A real `sbk serve` with the demo's production and 3 more jobs on a second site: (url, token)."""
    work = tmp_path_factory.mktemp("demo")
    out = subprocess.run([sys.executable, "-m", "server.cli", "demo", "--workdir", str(work), "--keep"],
                         capture_output=True, text=True, timeout=180, cwd=work)
    found = re.search(r"server (\S+) token (\S+); stop with: kill ([\d ]+)", out.stdout)
    assert out.returncode == 0 and found, out.stdout + out.stderr
    url, token, pids = found.group(1), found.group(2), [int(p) for p in found.group(3).split()]
    try:
        api = Api(url, token)
        api.call("POST", "/sites", json={"name": SECOND_SITE, "bunch_size": 3, "threshold_running": 500,
                                         "description": "second <b>site</b>"})
        request_id = api.call("GET", "/requests", params={"production": PRODUCTION})["requests"][0]["id"]
        ids = api.call("POST", "/submissions", json={"production": PRODUCTION, "bulks": [
            {"request": request_id, "sites": [SECOND_SITE], "runs": 3, "events": 500}]})["job_ids"]
        for job_id, final in zip(ids, [("failed", 30), None]):
            job_token = api.call("POST", f"/jobs/{job_id}/token")["server"]["token"]
            wrapper = requests.Session()
            wrapper.headers["Authorization"] = f"Bearer {job_token}"
            now = time.time()
            events = [event(1, step="RUNNING-04", message="payload started", time=now - 30)]
            if final:
                events.append(event(2, final[0], code=final[1], message="the payload exited 1", time=now))
            r = wrapper.post(f"{url}/api/v1/jobs/{job_id}/events", json=events, timeout=10)
            assert r.ok, r.text
        yield url, token
    finally:
        os.killpg(pids[0], signal.SIGTERM)   # the server leads its own process group
        for pid in pids[1:]:
            os.kill(pid, signal.SIGTERM)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are not installed: run scripts/install-deps as root")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tmp_path_factory.mktemp("chromium-profile")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("browser")


def wait_for(condition, timeout=10):
    """Poll `condition` until it is truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except WebDriverException:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("the page did not get there in time")
        time.sleep(0.05)


def sign_in(driver, url, token, path="/"):
    driver.get(url + path)
    wait_for(lambda: driver.find_element(By.ID, "token"))
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "signin-button").click()


@pytest.fixture()
def signed_in(served, browser):
    """The browser signed in afresh as the demo's manager (no cookie left by another test): the server's URL.
    Each test then stands alone, whichever ran before it."""
    url, token = served
    browser.get(url + "/signin")
    browser.delete_all_cookies()
    sign_in(browser, url, token, "/jobs")
    wait_for(lambda: browser.current_url.endswith("/jobs") and rows(browser))
    return url


def rows(driver):
    """The job monitor's visible rows as {column: text}."""
    out = []
    for tr in driver.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-job]"):
        out.append({td.get_attribute("data-col"): td.text for td in tr.find_elements(By.TAG_NAME, "td")})
    return out


def test_sign_in_is_required_and_a_wrong_token_refused(served, browser, shots):
    url, token = served
    browser.delete_all_cookies()
    browser.get(url + "/jobs")
    wait_for(lambda: "/signin" in browser.current_url)
    sign_in(browser, url, "sbku_wrong", "/jobs")
    error = wait_for(lambda: browser.find_element(By.ID, "signin-error"))
    assert "not a valid API token" in error.text
    browser.save_screenshot(str(shots / "signin-refused.png"))
    sign_in(browser, url, token, "/jobs")
    wait_for(lambda: browser.current_url.endswith("/jobs") and rows(browser))
    assert browser.find_element(By.ID, "signed-in-as").text == "demo"


def test_job_monitor_lists_filters_sorts_and_pages(signed_in, browser, shots):
    url = signed_in
    listed = rows(browser)
    assert len(listed) == 7 and "7 jobs found" in browser.find_element(By.ID, "total").text
    assert [int(r["runnum"]) for r in listed] == sorted((int(r["runnum"]) for r in listed), reverse=True)
    browser.save_screenshot(str(shots / "jobs.png"))

    # status: "none" then tick done, the way a person would
    browser.find_element(By.CSS_SELECTOR, "[data-name='none']").click()
    browser.find_element(By.CSS_SELECTOR, "#statuses input[value='done']").click()
    browser.find_element(By.ID, "search-jobs").click()
    wait_for(lambda: "status=done" in browser.current_url)
    done = rows(browser)
    assert len(done) == 4 and {r["status"] for r in done} == {"done"}

    browser.get(url + f"/jobs?site={SECOND_SITE}")
    second = rows(browser)
    assert len(second) == 3 and {r["site"] for r in second} == {SECOND_SITE}
    assert {r["status"] for r in second} == {"failed 030", "running", "prepared"}

    browser.get(url + "/jobs")
    browser.find_element(By.LINK_TEXT, "runnum ▼").click()     # descending now: a click sorts ascending
    wait_for(lambda: "sort=runnum" in browser.current_url)
    ascending = [int(r["runnum"]) for r in rows(browser)]
    assert ascending == sorted(ascending) and len(ascending) == 7

    browser.get(url + "/jobs?per_page=5&sort=runnum")
    assert len(rows(browser)) == 5
    assert browser.find_element(By.ID, "showing").text == "Showing 1 to 5 of 7 entries"
    browser.find_element(By.LINK_TEXT, "Next").click()
    wait_for(lambda: "page=2" in browser.current_url)
    assert [int(r["runnum"]) for r in rows(browser)] == ascending[5:]
    assert browser.find_element(By.ID, "showing").text == "Showing 6 to 7 of 7 entries"

    # hide the Site column at once, without a reload
    browser.find_element(By.CSS_SELECTOR, "summary").click()
    browser.find_element(By.CSS_SELECTOR, "#columns input[data-col='site']").click()
    cells = browser.find_elements(By.CSS_SELECTOR, "#jobs [data-col='site']")
    assert cells and not any(c.is_displayed() for c in cells)


def test_job_detail_shows_history_outputs_and_log(signed_in, browser, shots):
    url = signed_in
    browser.get(url + "/jobs?status=done&sort=runnum")
    first = rows(browser)[0]["runnum"]
    browser.find_element(By.LINK_TEXT, first).click()
    wait_for(lambda: browser.find_element(By.TAG_NAME, "h1").text.startswith(f"Job {first}"))
    history = browser.find_element(By.ID, "history").text
    assert "RUNNING-01" in history and "RUNNING-07" in history and "done" in history
    outputs = browser.find_elements(By.CSS_SELECTOR, "#outputs tbody tr")
    assert outputs and "root://" in outputs[0].text and re.search(r"\b[0-9a-f]{8}\b", outputs[0].text)
    assert browser.find_elements(By.CSS_SELECTOR, "#transfers tbody tr td")
    assert browser.find_element(By.ID, "log-links").text.startswith("attempt 1")
    assert browser.find_elements(By.CSS_SELECTOR, "pre.log")
    browser.save_screenshot(str(shots / "job.png"))


def test_productions_show_request_counts(signed_in, browser, shots):
    url = signed_in
    browser.get(url + "/productions")
    table = browser.find_element(By.ID, "productions").text
    assert PRODUCTION in table and "1 Request (0 open, 0 valid, 1 running, 0 closed)" in table
    assert "# jobs: 7" in table
    browser.find_element(By.LINK_TEXT, PRODUCTION).click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#requests tbody tr"))
    browser.save_screenshot(str(shots / "productions.png"))


def test_sites_show_thresholds_and_escape_markup(signed_in, browser):
    url = signed_in
    browser.get(url + "/sites")
    row = browser.find_element(By.XPATH, f"//table[@id='sites']//tr[td/a[text()='{SECOND_SITE}']]").text
    assert "500" in row and "3" in row and "second <b>site</b>" in row   # shown as text, not markup


def test_charts_draw_bars(signed_in, browser, shots):
    url = signed_in
    browser.get(url + "/charts")
    by_site = browser.find_elements(By.CSS_SELECTOR, "svg#jobs-by-site rect.bar")
    assert len(by_site) == 4   # DEMO-T1 done; DEMO-T2 failed, running, prepared
    assert browser.find_elements(By.CSS_SELECTOR, "svg#events-per-day rect.bar")
    browser.save_screenshot(str(shots / "charts.png"))
