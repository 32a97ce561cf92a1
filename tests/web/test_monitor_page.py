"""The job monitor page's new parts (issue 13, point 5): job-parameter filters, the error-codes legend,
kill and resubmit buttons, keyset pages (no OFFSET), auto-refresh."""
import logging
import re
from html import unescape
from html.parser import HTMLParser

import pytest

from shared.errors import CODES

from tests.server.conftest import Api, event, submit
from tests.server.test_monitor_params import second_request

from .conftest import new_token, sign_in


class Forms(HTMLParser):
    """The page's forms: [{"action", "fields": {name: value}, "buttons": [text]}], and labels by text."""

    def __init__(self, html):
        super().__init__()
        self.forms, self.labels, self._form, self._button, self._label = [], {}, None, None, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._form = {"action": unescape(a.get("action", "")), "fields": {}, "buttons": []}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("type") == "hidden":
            self._form["fields"][a.get("name")] = a.get("value", "")
        elif tag == "button":
            self._button = ""
        elif tag == "label":
            self._label = ["", a.get("for")]
        elif tag == "input" and self._label is not None and self._label[1] is None:
            self._label[1] = a.get("id") or a.get("name")

    def handle_data(self, data):
        if self._button is not None:
            self._button += data
        if self._label is not None:
            self._label[0] += data

    def handle_endtag(self, tag):
        if tag == "button" and self._button is not None:
            if self._form is not None:
                self._form["buttons"].append(self._button.strip())
            self._button = None
        elif tag == "label" and self._label is not None:
            self.labels[self._label[0].strip()] = self._label[1]
            self._label = None
        elif tag == "form":
            self._form = None

    def with_button(self, text):
        return [f for f in self.forms if text in f["buttons"]]


def page(client, url, status=200):
    r = client.get(url)
    assert r.status_code == status, r.get_data(as_text=True)[-500:]
    return r.get_data(as_text=True)


def runnums(html):
    return [int(n) for n in re.findall(r'<td data-col="runnum"><a href="/jobs/\d+">(\d+)</a>', html)]


def link(html, text):
    """The href of the link whose text is `text` (None when the pager shows it disabled)."""
    found = re.search(r'<a href="([^"]+)"[^>]*>' + re.escape(text) + "</a>", html)
    return unescape(found.group(1)) if found else None


@pytest.fixture()
def shifter(client, data):
    """The client signed in as a shifter (monitoring and shifter-submission)."""
    assert sign_in(client, new_token("shifter", ["Shift"])).status_code == 302
    return client


def csrf(client):
    return re.search(r'name="csrf" value="([^"]+)"', page(client, "/")).group(1)


@pytest.fixture()
def queries():
    """Every SQL statement peewee runs while the test does (its logger at DEBUG)."""
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(str(record.msg))
    logger = logging.getLogger("peewee")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield seen
    logger.removeHandler(handler)
    logger.setLevel(old_level)


# --- job-parameter filters

def test_the_form_offers_each_parameters_values_and_the_filter_selects_their_jobs(client, data):
    api = Api(client, data["token"])
    other = second_request(api, data)
    generics = submit(api, {"production": data["production"], "request": other}, runs=2)["job_ids"]
    assert sign_in(client, new_token("watcher", ["webui"])).status_code == 302
    html = page(client, "/jobs")
    boxes = Forms(html).labels
    for value in ("HadRecoilCocktail", "Generics", "B0B0bar_SL", "BpBm_generic", "DG_4"):
        assert value in boxes, value
    for name in ("Analysis", "Generator", "Geometry", "Background"):
        assert f"<legend>{name}</legend>" in html
    chosen = page(client, "/jobs?param.Analysis=Generics")
    with client.application.app_context():
        from server import db, models as m
        with db.connection():
            wanted = sorted(m.Job.get_by_id(i).runnum for i in generics)
    assert sorted(runnums(chosen)) == wanted and "<b>2</b> jobs found" in chosen
    assert re.search(r'name="param.Analysis" value="Generics" checked', chosen)     # the choice is kept
    both = page(client, "/jobs?param.Analysis=Generics&param.Analysis=HadRecoilCocktail")
    assert len(runnums(both)) == 6
    assert runnums(page(client, "/jobs?param.Analysis=Generics&param.Generator=B0B0bar_SL")) == []
    refused = page(client, "/jobs?param.Colour=red", 400)
    assert "Colour" in refused and "Traceback" not in refused


# --- the error-codes legend

def test_the_error_codes_page_lists_every_code_with_its_blame_and_retryable(reader):
    html = page(reader, "/error-codes")
    for code in CODES.values():
        row = re.search(rf'<tr id="code-{code.label}"[^>]*>(.*?)</tr>', html, re.S)
        assert row, code.label
        cells = [unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1), re.S)]
        assert cells == [code.label, code.status, code.blame, "yes" if code.retryable else "no", code.message]
    monitor = page(reader, "/jobs")
    assert link(monitor, "error codes") == "/error-codes"
    assert "/error-codes#code-030" in monitor      # the failed job's code links to its row


# --- kill and resubmit

def test_a_monitoring_user_sees_no_action_and_may_not_post_one(reader, data):
    for url in ("/jobs", f"/jobs/{data['failed']}", f"/jobs/{data['ids'][1]}"):
        forms = Forms(page(reader, url))
        assert not forms.with_button("Kill") and not forms.with_button("Resubmit"), url
        assert not forms.with_button("Resubmit the failed jobs matching these filters")
    token = csrf(reader)
    for url in (f"/jobs/{data['ids'][1]}/kill", f"/jobs/{data['failed']}/resubmit", "/jobs/resubmit?status=failed"):
        r = reader.post(url, data={"csrf": token})
        assert r.status_code == 403 and "shifter-submission" in r.get_data(as_text=True), url
    assert Api(reader, data["token"]).get(f"/jobs/{data['ids'][1]}").json["status"] == "prepared"


def test_buttons_follow_the_life_cycle(shifter, data):
    rows = {int(job): html for job, html in re.findall(r'<tr class="status-[a-z-]+" data-job="(\d+)">(.*?)</tr>',
                                                         page(shifter, "/jobs"), re.S)}
    prepared = data["ids"][1]
    assert ">Kill<" in rows[prepared] and ">Resubmit<" not in rows[prepared]
    assert ">Resubmit<" in rows[data["failed"]] and ">Kill<" not in rows[data["failed"]]
    assert ">Kill<" not in rows[data["done"]] and ">Resubmit<" not in rows[data["done"]]
    assert Forms(page(shifter, f"/jobs/{data['failed']}")).with_button("Resubmit")
    done = Forms(page(shifter, f"/jobs/{data['done']}"))
    assert not done.with_button("Kill") and not done.with_button("Resubmit")


def test_kill_and_resubmit_from_the_pages_work(shifter, data):
    api = Api(shifter, data["token"])
    monitor = Forms(page(shifter, "/jobs?sort=runnum"))
    prepared = data["ids"][1]
    kill = next(f for f in monitor.with_button("Kill") if f["action"] == f"/jobs/{prepared}/kill")
    r = shifter.post(kill["action"], data=kill["fields"])
    assert r.status_code == 302 and r.location.endswith("/jobs?sort=runnum")      # back where the button was
    assert f"Job {prepared} killed before it started." in page(shifter, r.location)
    job = api.get(f"/jobs/{prepared}").json
    assert (job["status"], job["error_code"]) == ("sys-failed", 62)

    resubmit = Forms(page(shifter, f"/jobs/{data['failed']}")).with_button("Resubmit")[0]
    r = shifter.post(resubmit["action"], data=dict(resubmit["fields"], backend=""))
    assert r.status_code == 302 and r.location == f"/jobs/{data['failed']}"
    assert "resubmitted: attempt 2" in page(shifter, r.location)
    job = api.get(f"/jobs/{data['failed']}").json
    assert (job["status"], job["attempt"]) == ("prepared", 2)


def test_a_refused_transition_shows_its_reason(shifter, data):
    token = csrf(shifter)
    r = shifter.post(f"/jobs/{data['done']}/kill", data={"csrf": token})
    html = r.get_data(as_text=True)
    assert r.status_code == 409
    reason = re.search(r'<p class="error" role="alert" id="refused">(.*?)</p>', html).group(1)
    assert "cannot be killed" in reason and "the job is done" in reason
    r = shifter.post(f"/jobs/{data['ids'][1]}/resubmit", data={"csrf": token})
    assert r.status_code == 409 and "cannot be resubmitted" in r.get_data(as_text=True)
    assert shifter.post("/jobs/999999/kill", data={"csrf": token}).status_code == 404


def test_actions_need_the_csrf_token(shifter, data):
    for url in (f"/jobs/{data['ids'][1]}/kill", f"/jobs/{data['failed']}/resubmit", "/jobs/resubmit?status=failed"):
        assert shifter.post(url, data={}).status_code == 400, url
        assert shifter.post(url, data={"csrf": "forged"}).status_code == 400, url
    assert Api(shifter, data["token"]).get(f"/jobs/{data['ids'][1]}").json["status"] == "prepared"


def test_resubmit_the_failed_jobs_matching_the_filters(shifter, data):
    form = Forms(page(shifter, "/jobs?site=INFN-TORINO")).with_button(
        "Resubmit the failed jobs matching these filters")[0]
    assert form["action"] == "/jobs/resubmit?site=INFN-TORINO"
    r = shifter.post(form["action"], data=dict(form["fields"], backend=""))
    assert r.status_code == 302 and "1 failed jobs resubmitted." in page(shifter, r.location)
    assert Api(shifter, data["token"]).get(f"/jobs/{data['failed']}").json["attempt"] == 2
    r = shifter.post("/jobs/resubmit", data={"csrf": csrf(shifter)})     # no filter: refused, one line
    assert r.status_code == 400 and 'id="refused">give at least one job monitor filter' in r.get_data(as_text=True)


# --- keyset pages

SORTS = ("runnum", "-runnum", "status", "-site", "prepared_at", "-prepared_at", "-status", "site")


@pytest.fixture()
def many(client, data):
    """19 jobs on two sites, in several statuses (the data's 4 and 15 more)."""
    api = Api(client, data["token"])
    more = submit(api, data, runs=8)["job_ids"] + submit(api, data, runs=7, sites=("INFN-TORINO",))["job_ids"]
    for n, job_id in enumerate(more[::4]):
        token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
        api.as_(token).post(f"/jobs/{job_id}/events", json=event(1, "done" if n % 2 else "failed", code=0 if n % 2 else 30))
    return api


def expected(api, sort):
    return [j["runnum"] for j in api.get(f"/jobs?per_page=100&sort={sort}").json["jobs"]]


def test_walking_next_returns_every_job_once_in_order_without_offset(reader, many, queries):
    for sort in SORTS:
        want = expected(many, sort)
        assert len(want) == 19
        del queries[:]
        url, seen, numbers = f"/jobs?per_page=4&sort={sort}", [], []
        while url:
            html = page(reader, url)
            seen += runnums(html)
            numbers.append(int(re.search(r'<b class="current">(\d+)</b>', html).group(1)))
            url = link(html, "Next")
        assert seen == want, sort
        assert numbers == [1, 2, 3, 4, 5], sort
        assert "Showing 17 to 19 of 19 entries" in html
        assert any('FROM "job"' in q and "LIMIT" in q for q in queries)     # the capture sees the page's reads
        assert not any(re.search(r"\bOFFSET\b", q) for q in queries), sort


def test_numbered_pages_around_the_current_one_carry_cursors(reader, many):
    want = expected(many, "runnum")
    html = page(reader, "/jobs?per_page=4&sort=runnum")
    assert link(html, "3") and link(html, "4") is None and "after=" in link(html, "3")
    third = page(reader, link(html, "3"))
    assert runnums(third) == want[8:12] and '<b class="current">3</b>' in third
    for n, rows in ((1, want[0:4]), (2, want[4:8]), (4, want[12:16]), (5, want[16:19])):
        assert runnums(page(reader, link(third, str(n)))) == rows, n
    first = page(reader, link(third, "First"))
    assert runnums(first) == want[:4] and link(first, "Previous") is None and link(first, "First") is None


def test_last_shows_the_last_rows_and_previous_walks_back(reader, many, queries):
    for sort in ("runnum", "-site", "status"):
        want = expected(many, sort)
        del queries[:]
        html = page(reader, link(page(reader, f"/jobs?per_page=4&sort={sort}"), "Last"))
        assert runnums(html) == want[-4:], sort
        assert link(html, "Next") is None and link(html, "Last") is None
        assert "Showing 16 to 19 of 19 entries" in html
        back = []
        while html is not None:
            back = runnums(html) + back
            previous = link(html, "Previous")
            html = page(reader, previous) if previous else None
        # pages aligned on the end; the first page is the first rows (it may overlap its neighbour)
        assert back[:4] == want[:4] and back[-16:] == want[-16:], sort
        assert not any(re.search(r"\bOFFSET\b", q) for q in queries), sort


def test_a_bad_cursor_or_sort_is_a_one_line_400(reader, many):
    assert "must be the" in page(reader, "/jobs?after=nonsense", 400)
    for sort in ("wct", "events", "-events"):       # no index serves them both ways: not on the page
        assert "sort" in page(reader, f"/jobs?sort={sort}", 400)
    assert page(reader, "/jobs?refresh=7", 400)


# --- auto-refresh

def test_auto_refresh_reloads_the_table_only_when_chosen(reader, data):
    plain = page(reader, "/jobs")
    assert "hx-trigger" not in plain and 'http-equiv="refresh"' not in plain
    assert '<label>Refresh every <select name="refresh" id="refresh"><option value="0" selected>off</option>' in plain
    for seconds in (30, 60):
        html = page(reader, f"/jobs?refresh={seconds}&status=failed")
        assert f'hx-trigger="every {seconds}s"' in html
        assert f'hx-get="/jobs/table?refresh={seconds}&amp;status=failed"' in html
        assert f'<noscript><meta http-equiv="refresh" content="{seconds}"></noscript>' in html
        assert f'<option value="{seconds}" selected>' in html
    fragment = page(reader, "/jobs/table?refresh=30&status=failed")
    assert "<html" not in fragment and 'id="job-table"' in fragment and 'hx-trigger="every 30s"' in fragment
    assert len(runnums(fragment)) == 1 and "<b>1</b> jobs found" in fragment
