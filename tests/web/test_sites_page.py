"""Site management on the web desk, clicked as a person would (fields by label, buttons by text) through the
Flask test client, SQLite and PostgreSQL: create, edit, the session and production switches (and the API
obeying them), the per-production table, the chart, privileges and CSRF."""
import re
from html.parser import HTMLParser

import pytest

from tests.server.conftest import Api, new_token

from .conftest import sign_in


# ---------------------------------------------------------------------- a tiny form reader (no browser)

class Form:
    def __init__(self, attrs):
        self.action, self.method = attrs.get("action", ""), attrs.get("method", "get").lower()
        self.id = attrs.get("id", "")
        self.fields = []     # dicts: tag, name, type, value, id, checked
        self.buttons = []    # (text, name, value)


class _Parser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms, self.labels = [], {}   # labels: text -> [for id]
        self.form = self.label = self.textarea = self.button = self.select = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self.form = Form(a)
            self.forms.append(self.form)
        elif tag == "label":
            self.label = [a.get("for", ""), ""]
        elif self.form is None:
            return
        elif tag == "input":
            self.form.fields.append({"tag": "input", "name": a.get("name", ""), "type": a.get("type", "text"),
                                     "value": a.get("value", ""), "id": a.get("id", ""), "checked": "checked" in a})
        elif tag == "textarea":
            self.textarea = {"tag": "textarea", "name": a.get("name", ""), "type": "textarea", "value": "",
                             "id": a.get("id", ""), "checked": False}
            self.form.fields.append(self.textarea)
        elif tag == "select":
            self.select = {"tag": "select", "name": a.get("name", ""), "type": "select", "value": None,
                           "id": a.get("id", ""), "checked": False}
            self.form.fields.append(self.select)
        elif tag == "option" and self.select is not None:
            if self.select["value"] is None or "selected" in a:
                self.select["value"] = a.get("value", "")
        elif tag == "button":
            self.button = [a.get("name", ""), a.get("value", ""), ""]

    def handle_endtag(self, tag):
        if tag == "form":
            self.form = None
        elif tag == "label" and self.label:
            self.labels.setdefault(" ".join(self.label[1].split()), []).append(self.label[0])
            self.label = None
        elif tag == "textarea":
            self.textarea = None
        elif tag == "select":
            self.select = None
        elif tag == "button" and self.button is not None and self.form is not None:
            name, value, text = self.button
            self.form.buttons.append((" ".join(text.split()), name, value))
            self.button = None

    def handle_data(self, data):
        if self.label is not None:
            self.label[1] += data
        if self.textarea is not None:
            self.textarea["value"] += data
        if self.button is not None:
            self.button[2] += data


def parse(html):
    parser = _Parser()
    parser.feed(html)
    return parser


def find_form(html, button, **hidden):
    """The form with a button reading `button` whose hidden fields include `hidden`; (form, labels)."""
    page = parse(html)
    for form in page.forms:
        values = {f["name"]: f["value"] for f in form.fields}
        if any(text == button for text, _, _ in form.buttons) and all(values.get(k) == v for k, v in hidden.items()):
            return form, page.labels
    raise AssertionError(f"no form with a button {button!r} and {hidden}")


def buttons(html):
    return {text for form in parse(html).forms for text, _, _ in form.buttons}


def click(client, page_url, button, fill=None, drop=(), **hidden):
    """Load `page_url`, fill the form of `button` by labels, press it; the response."""
    form, labels = find_form(client.get(page_url).get_data(as_text=True), button, **hidden)
    data = {}
    for f in form.fields:
        if f["type"] in ("checkbox", "radio") and not f["checked"]:
            continue
        if f["name"]:
            data.setdefault(f["name"], []).append(f["value"])
    by_id = {f["id"]: f for f in form.fields if f["id"]}
    for label, value in (fill or {}).items():
        ids = [i for i in labels.get(label, []) if i in by_id]
        assert len(ids) == 1, f"label {label!r}: {labels.get(label)}"
        field = by_id[ids[0]]
        if field["type"] == "checkbox":
            data.pop(field["name"], None) if not value else data.setdefault(field["name"], []).append(field["value"])
        else:
            data[field["name"]] = [value]
    for name in drop:
        data.pop(name, None)
    for text, name, value in form.buttons:
        if text == button and name:
            data[name] = [value]
    return client.post(form.action or page_url, data=data)


# ---------------------------------------------------------------------- fixtures

@pytest.fixture()
def expert(client, data):
    """The client signed in as the Developer who made the data (every privilege)."""
    assert sign_in(client, data["token"]).status_code == 302
    return client


def site_api(data, client, name):
    return Api(client, data["token"]).get(f"/sites/{name}").json


def bulk(api, data, test=False):
    return api.post("/submissions", json={"production": data["production"], "bulks": [
        {"request": data["request"]["id"], "test": test, "sites": ["INFN-TORINO"], "runs": 1, "events": 10}]})


# ---------------------------------------------------------------------- tests

def test_an_expert_creates_a_site_through_the_form(expert, data, client):
    r = click(expert, "/sites", "Create site", {"Site name": "INFN-BARI", "Running threshold": "40",
                                                 "Bunch dimension": "20", "Description": "Bari <b>T2</b>"})
    assert r.status_code == 302 and r.location == "/sites/INFN-BARI"
    made = site_api(data, client, "INFN-BARI")
    assert made["thresholds"] == {"prepared": 0, "running": 40, "failed": 0} and made["bunch_size"] == 20
    assert made["description"] == "Bari <b>T2</b>"
    page = expert.get(r.location).get_data(as_text=True)
    assert "Site INFN-BARI created." in page and "Bari &lt;b&gt;T2&lt;/b&gt;" in page
    # refused: the same name again (409), a threshold that is not a number (400): the reason, what was typed kept
    r = click(expert, "/sites", "Create site", {"Site name": "INFN-BARI", "Description": "again"})
    page = r.get_data(as_text=True)
    assert r.status_code == 409 and 'role="alert"' in page and "site INFN-BARI already exists" in page
    assert ">again</textarea>" in page
    r = click(expert, "/sites", "Create site", {"Site name": "INFN-PISA", "Failed threshold": "ten"})
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and "&#39;threshold_failed&#39; must be a whole number" in page
    assert 'value="INFN-PISA"' in page and 'value="ten"' in page
    r = click(expert, "/sites", "Create site", {"Site name": "bad name!"})
    assert r.status_code == 400 and 'role="alert"' in r.get_data(as_text=True)


def test_an_expert_edits_the_site_info(expert, data, client):
    r = click(expert, "/sites/INFN-T1", "Save site info", {
        "Prepared threshold": "30", "Running threshold": "500", "Failed threshold": "10",
        "Bunch dimension": "50", "Description": "Tier-1 at CNAF"})
    assert r.status_code == 302 and r.location == "/sites/INFN-T1"
    site = site_api(data, client, "INFN-T1")
    assert site["thresholds"] == {"prepared": 30, "running": 500, "failed": 10} and site["bunch_size"] == 50
    assert site["description"] == "Tier-1 at CNAF"
    info = expert.get("/sites/INFN-T1").get_data(as_text=True).split('id="site-info"')[1].split("</table>")[0]
    assert re.findall(r'<td class="num">(\d+)</td>', info) == ["30", "500", "10", "50"]
    # an empty description is kept empty (not left out), a bunch of 0 is refused with the reason
    assert click(expert, "/sites/INFN-T1", "Save site info", {"Description": ""}).status_code == 302
    assert site_api(data, client, "INFN-T1")["description"] == ""
    r = click(expert, "/sites/INFN-T1", "Save site info", {"Bunch dimension": "0", "Description": "kept"})
    page = r.get_data(as_text=True)
    assert r.status_code == 400 and "&#39;bunch_size&#39;" in page and ">kept</textarea>" in page
    assert site_api(data, client, "INFN-T1")["bunch_size"] == 50


def test_a_disabled_or_unsupported_session_refuses_main_bulks_through_the_api(expert, data, client):
    api = Api(client, data["token"])
    r = click(expert, "/sites/INFN-TORINO", "disable", session="FastSim")
    assert r.status_code == 302
    page = expert.get(r.location).get_data(as_text=True)
    assert "Session FastSim disabled at INFN-TORINO." in page
    row = page.split('id="session-FastSim"')[1].split("</tr>")[0]
    assert '<td class="no">disabled</td>' in row and "enable" in buttons(page)
    r = bulk(api, data)
    assert r.status_code == 409 and r.json["error"] == "site-disabled"
    assert click(expert, "/sites/INFN-TORINO", "enable", session="FastSim").status_code == 302
    assert click(expert, "/sites/INFN-TORINO", "unsupport", session="FastSim").status_code == 302
    assert {"session": "FastSim", "enabled": True, "supported": False} == {
        k: v for k, v in site_api(data, client, "INFN-TORINO")["sessions"][0].items() if k != "last_activity"}
    r = bulk(api, data)
    assert r.status_code == 409 and r.json["error"] == "site-unsupported"
    assert bulk(api, data, test=True).status_code == 201   # a test bulk checks an unsupported site
    assert click(expert, "/sites/INFN-TORINO", "support", session="FastSim").status_code == 302
    assert bulk(api, data).status_code == 201


def test_a_production_not_allowed_at_a_site_is_refused_there(expert, data, client):
    api = Api(client, data["token"])
    r = click(expert, "/sites/INFN-TORINO", "not allow", production=data["production"])
    assert r.status_code == 302
    page = expert.get(r.location).get_data(as_text=True)
    row = page.split(f'>{data["production"]}</a>')[1].split("</tr>")[0]
    assert '<td colspan="2" class="no">not allowed</td>' in row
    for test in (False, True):   # the _test twin follows its production
        r = bulk(api, data, test=test)
        assert r.status_code == 409 and r.json["error"] == "site-not-allowed"
    assert click(expert, "/sites/INFN-TORINO", "allow", production=data["production"]).status_code == 302
    assert bulk(api, data).status_code == 201
    # a refused switch (no such production) is one line on the page with the API's status
    r = click(expert, "/sites/INFN-TORINO", "not allow", production=data["production"])
    assert r.status_code == 302
    form, _ = find_form(expert.get("/sites/INFN-TORINO").get_data(as_text=True), "allow")
    csrf = next(f["value"] for f in form.fields if f["name"] == "csrf")
    r = expert.post("/sites/INFN-TORINO/productions", data={"csrf": csrf, "production": "Nope", "value": "true"})
    assert r.status_code == 404 and "production &#39;Nope&#39; does not exist" in r.get_data(as_text=True)
    r = expert.post("/sites/INFN-TORINO/sessions", data={"csrf": csrf, "session": "FastSim", "switch": "enabled",
                                                        "value": "maybe"})
    assert r.status_code == 400 and 'role="alert"' in r.get_data(as_text=True)


def test_the_table_shows_jobs_events_and_the_last_submission(reader, data):
    page = reader.get("/sites/INFN-T1").get_data(as_text=True)
    session = page.split('id="session-FastSim"')[1].split("</tbody>")[0]
    first = session.split("</tr>")[0]
    assert '<td class="yes">enabled</td>' in first and '<td class="yes">supported</td>' in first
    assert "1 done, 1 prepared" in first and re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td>", first)
    production = session.split(f'>{data["production"]}</a>')[1].split("</tr>")[0]
    assert "# jobs: 2 # events: 200" in production
    assert re.search(r"Submitted by dev on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", production)
    # the other site's own counts
    torino = reader.get("/sites/INFN-TORINO").get_data(as_text=True)
    assert "Submitted by dev" in torino and "1 failed, 1 prepared" in torino


def test_the_chart_draws_the_sites_jobs_by_status(reader, data, client):
    page = reader.get("/sites/INFN-TORINO").get_data(as_text=True)
    chart = page.split('id="site-jobs"')[1].split("</svg>")[0]
    titles = re.findall(r"<title>([^<]+)</title>", chart)
    assert titles == ["INFN-TORINO: 1 prepared", "INFN-TORINO: 1 failed"] and chart.count('class="bar"') == 2
    Api(client, data["token"]).post("/sites", json={"name": "EMPTY-SITE"})
    assert "Nothing to draw yet." in reader.get("/sites/EMPTY-SITE").get_data(as_text=True)


ACTIONS = [("/sites", {"name": "X-SITE"}),
           ("/sites/INFN-T1/settings", {"bunch_size": "7"}),
           ("/sites/INFN-T1/sessions", {"session": "FastSim", "switch": "enabled", "value": "false"}),
           ("/sites/INFN-T1/productions", {"production": "2010_July", "value": "false"})]


@pytest.mark.parametrize("groups", [["Shift"], ["webui"], ["FastProdMgr"]])
def test_without_expert_submission_there_are_no_buttons_and_every_action_is_403(client, data, groups):
    assert sign_in(client, new_token("someone", groups)).status_code == 302
    for url in ("/sites", "/sites/INFN-T1"):
        page = client.get(url).get_data(as_text=True)
        assert not buttons(page) - {"Sign out"}, (url, buttons(page))
        assert "Site name" not in page and "Prepared threshold" not in page
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/sites").get_data(as_text=True)).group(1)
    for url, form in ACTIONS:
        r = client.post(url, data={"csrf": csrf, **form})
        assert r.status_code == 403 and "expert-submission" in r.get_data(as_text=True), url
    site = site_api(data, client, "INFN-T1")
    assert site["bunch_size"] == 5 and all(x["enabled"] for x in site["sessions"])
    assert all(p["allowed"] for p in site["productions"])


def test_every_action_needs_the_forms_csrf_token(expert, data, client):
    for url, form in ACTIONS:
        r = expert.post(url, data=form)
        assert r.status_code == 400, url
        r = expert.post(url, data={**form, "csrf": "forged"})
        assert r.status_code == 400, url
    assert "X-SITE" not in {s["name"] for s in Api(client, data["token"]).get("/sites").json["sites"]}
    assert site_api(data, client, "INFN-T1")["bunch_size"] == 5
