"""The productions page and its actions through the Flask test client (SQLite and PostgreSQL): create,
close/open with the twin, note, the retired-release rule, privileges and CSRF. Forms are filled as a
person would: fields found by their label, buttons by their text."""
import html as entities
import re
from html.parser import HTMLParser

from werkzeug.datastructures import MultiDict

from server import db
from server import models as m
from tests.server.conftest import Api, new_token

from .conftest import sign_in


class Form:
    """One <form>: its action, method, fields (id, name, kind, value) by label, and its buttons."""

    def __init__(self, attrs):
        self.id, self.action = attrs.get("id"), attrs.get("action", "")
        self.method = attrs.get("method", "get").lower()
        self.controls = []           # dicts: tag, name, type, value, checked, id, options, disabled
        self.buttons = []            # dicts: text, name, value
        self.labels = {}             # control id -> label text

    def control(self, label):
        ids = [i for i, text in self.labels.items() if text == label]
        assert ids, f"no field labelled {label!r} in form {self.id}: {sorted(self.labels.values())}"
        return next(c for c in self.controls if c["id"] == ids[0])

    def data(self, values, button=None):
        """The pairs the browser sends: defaults, then `values` ({label: value}; a list for boxes of one
        name, True/False for a checkbox), then the button's name."""
        chosen = {}
        for label, value in values.items():
            c = self.control(label)
            chosen[c["id"]] = value
        pairs = []
        for c in self.controls:
            if c["disabled"] or not c["name"]:
                continue
            value = chosen.get(c["id"], None)
            if c["type"] == "checkbox":
                on = c["checked"] if value is None else bool(value)
                if on:
                    pairs.append((c["name"], c["value"] or "on"))
            elif value is not None:
                pairs.append((c["name"], value))
            elif c["tag"] == "select":
                picked = [v for v, sel in c["options"] if sel] or [v for v, _ in c["options"][:1]]
                pairs.extend((c["name"], v) for v in picked)
            else:
                pairs.append((c["name"], c["value"]))
        if button is not None:
            b = next((b for b in self.buttons if b["text"] == button), None)
            assert b is not None, f"no button {button!r} in form {self.id}: {[b['text'] for b in self.buttons]}"
            if b["name"]:
                pairs.append((b["name"], b["value"]))
        return MultiDict(pairs)


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms, self.form, self.label_for, self.label_text = [], None, None, None
        self.select, self.option, self.textarea, self.button = None, None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.form = Form(a)
            self.forms.append(self.form)
        elif self.form is None:
            return
        elif tag == "label":
            self.label_for, self.label_text = a.get("for"), ""
        elif tag in ("input", "select", "textarea"):
            c = {"tag": tag, "name": a.get("name"), "type": a.get("type", tag), "value": a.get("value", ""),
                 "checked": "checked" in a, "id": a.get("id"), "options": [], "disabled": "disabled" in a}
            if c["type"] == "hidden":
                c["id"] = None
            self.form.controls.append(c)
            self.select = c if tag == "select" else None
            self.textarea = c if tag == "textarea" else None
        elif tag == "option" and self.select is not None:
            self.option = [a.get("value", ""), "selected" in a]
            self.select["options"].append(self.option)
        elif tag == "button":
            self.button = {"text": "", "name": a.get("name"), "value": a.get("value", "")}
            self.form.buttons.append(self.button)

    def handle_endtag(self, tag):
        if tag == "form":
            self.form = None
        elif tag == "label" and self.form is not None and self.label_for:
            self.form.labels[self.label_for] = self.label_text.strip()
            self.label_for = None
        elif tag == "select":
            self.select = None
        elif tag == "textarea":
            self.textarea = None
        elif tag == "button" and self.button is not None:
            self.button["text"] = self.button["text"].strip()
            self.button = None

    def handle_data(self, text):
        if self.label_for is not None:
            self.label_text += text
        if self.textarea is not None:
            self.textarea["value"] += text
        if self.button is not None:
            self.button["text"] += text


def forms(html):
    parser = PageParser()
    parser.feed(html)
    return parser.forms


def form(html, form_id=None, button=None):
    """The form with `form_id`, or the one holding the button `button`."""
    for f in forms(html):
        if (form_id and f.id == form_id) or (button and any(b["text"] == button for b in f.buttons)):
            return f
    raise AssertionError(f"no form {form_id or button!r} on the page")


def submit(client, path, button, values=None, form_id=None, index=0):
    """Open `path`, fill the form holding `button` (the `index`-th such form) and press it."""
    html = client.get(path).get_data(as_text=True)
    candidates = [f for f in forms(html) if (form_id and f.id == form_id)
                  or (not form_id and any(b["text"] == button for b in f.buttons))]
    assert candidates, f"no form with button {button!r} on {path}"
    f = candidates[index]
    data = f.data(values or {}, button)
    if f.method == "get":
        return client.get(f.action or path, query_string=data)
    return client.post(f.action or path, data=data)


def text(response):
    """The page's text without tags (for sentences split by markup)."""
    return entities.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))))


def manager(client, name="mgr"):
    """Sign the client in as a production manager (FastProdMgr); return the API as that manager."""
    token = new_token(name, ["FastProdMgr"])
    assert sign_in(client, token).status_code == 302
    return Api(client, token)


def add_release(api, revision, retired=False):
    r = api.post("/sessions/FastSim/software", json={
        "name": "PacProductionApp", "version": "V0.3.0", "revision": revision,
        "lfn": f"lfn:/grid/superbvo.org/production/FastSim/rel/V0.3.0_rev{revision}.tjz",
        "adler32": "1a2b3c4d", "workdir": "FastSim/V0.3.0", "exe": "bin/PacProduction", "env": {}})
    assert r.status_code == 201, r.json
    if retired:
        with db.connection():
            m.Software.update(retired=True).where(m.Software.id == r.json["id"]).execute()
    return r.json


# ---------------------------------------------------------------- create


def test_a_manager_creates_a_production_and_its_twin_through_the_form(client, data):
    api = manager(client)
    html = client.get("/productions").get_data(as_text=True)
    box = form(html, "create-production").control("Create test prod_series?")
    assert box["checked"] and box["disabled"]
    assert "every production gets its" in html
    r = submit(client, "/productions", "Create production", {
        "Production series name": "2011_March", "Session": "FastSim", "Software release": "311:V0.2.5",
        "Note": "spring run"})
    assert r.status_code == 302 and r.location.endswith("/productions/2011_March")
    p = api.get("/productions/2011_March").json
    assert (p["session"], p["software"]["version"], p["software"]["revision"]) == ("FastSim", "V0.2.5", 311)
    assert p["note"] == "spring run" and p["twin"] == "2011_March_test" and p["created_by"] == "mgr"
    assert api.get("/productions/2011_March_test").json["test"] is True
    page = client.get(r.location).get_data(as_text=True)
    assert "Production 2011_March and its test twin 2011_March_test created." in page
    kinds = [a["type"] for a in api.get("/activities?user=mgr").json["activities"]]
    assert "production-created" in kinds


def test_a_refused_production_keeps_what_was_typed(client, data):
    manager(client)
    r = submit(client, "/productions", "Create production", {
        "Production series name": "2010_July", "Software release": "311:V0.2.5", "Note": "again"})
    assert r.status_code == 409
    page = r.get_data(as_text=True)
    assert "production 2010_July (or its twin) already exists" in page
    f = form(page, "create-production")
    assert f.control("Note")["value"] == "again"
    r = submit(client, "/productions", "Create production", {"Production series name": "x_test"})
    assert r.status_code == 400 and "must not end with _test" in text(r)


def test_the_release_select_lists_the_sessions_releases_not_retired(client, data):
    api = manager(client)
    add_release(api, 400)
    add_release(api, 401, retired=True)
    fragment = client.get("/productions/_releases?session=FastSim").get_data(as_text=True)
    assert 'value="400:V0.3.0"' in fragment and 'value="311:V0.2.5"' in fragment
    assert "401:V0.3.0" not in fragment
    assert 'id="release-select"' in fragment and "<label for=\"f-release\">Software release</label>" in fragment
    assert "no software release" in client.get("/productions/_releases?session=Nope").get_data(as_text=True)
    # the session select reloads the releases through htmx; without JavaScript "Show releases" re-renders
    html = client.get("/productions").get_data(as_text=True)
    assert 'hx-get="/productions/_releases"' in html and 'hx-target="#release-select"' in html
    r = submit(client, "/productions", "Show releases", {"Production series name": "kept"})
    assert r.status_code == 200 and 'value="400:V0.3.0"' in r.get_data(as_text=True)
    assert form(r.get_data(as_text=True), "create-production").control("Production series name")["value"] == "kept"
    assert api.get("/productions/kept").status_code == 404


def test_a_retired_release_is_refused_on_the_page_and_in_the_api(client, data):
    api = manager(client)
    add_release(api, 401, retired=True)
    # the select does not offer it: a stale page (or a forged form) sends it anyway
    sent = form(client.get("/productions").get_data(as_text=True), "create-production").data(
        {"Production series name": "2012_Old"})
    sent.setlist("release", ["401:V0.3.0"])
    r = client.post("/productions", data=sent)
    assert r.status_code == 409
    assert "software release V0.3.0 401 of session FastSim is retired" in text(r)
    r = api.post("/productions", json={"name": "2012_Old", "session": "FastSim", "version": "V0.3.0",
                                       "revision": 401})
    assert r.status_code == 409 and r.json["error"] == "release-retired"
    # no revision: the newest one not retired, and 409 when every revision of the version is retired
    r = api.post("/productions", json={"name": "2012_Old", "session": "FastSim", "version": "V0.3.0"})
    assert r.status_code == 409 and r.json["error"] == "release-retired"
    add_release(api, 400)
    r = api.post("/productions", json={"name": "2012_Old", "session": "FastSim", "version": "V0.3.0"})
    assert r.status_code == 201 and r.json["software"]["revision"] == 400
    assert api.get("/productions/2012_Old_test").status_code == 200


# ---------------------------------------------------------------- close, open, note


def test_closing_a_production_closes_its_twin_and_opening_opens_both(client, data):
    api = manager(client)
    r = submit(client, "/productions", "Close")
    assert r.status_code == 302
    assert [api.get(f"/productions/{n}").json["status"] for n in ("2010_July", "2010_July_test")] == ["closed"] * 2
    page = client.get(r.location).get_data(as_text=True)
    assert "Production 2010_July closed with 2010_July_test." in page
    r = submit(client, "/productions/2010_July", "Open")
    assert r.status_code == 302
    assert [api.get(f"/productions/{n}").json["status"] for n in ("2010_July", "2010_July_test")] == ["open"] * 2
    # the twin has no button of its own, and its status cannot be posted
    assert "Close" not in [b["text"] for f in forms(client.get("/productions/2010_July_test").get_data(as_text=True))
                           for b in f.buttons]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = client.post("/productions/2010_July_test/status", data={"csrf": csrf, "status": "closed"})
    assert r.status_code == 400 and "opens and closes with 2010_July" in text(r)
    assert api.get("/productions/2010_July_test").json["status"] == "open"


def test_a_manager_edits_the_note(client, data):
    api = manager(client)
    r = submit(client, "/productions/2010_July", "Save note", {"Note": "reprocessed <b>twice</b>"})
    assert r.status_code == 302
    assert api.get("/productions/2010_July").json["note"] == "reprocessed <b>twice</b>"
    assert "reprocessed &lt;b&gt;twice&lt;/b&gt;" in client.get("/productions").get_data(as_text=True)
    r = submit(client, "/productions/2010_July", "Save note", {"Note": "x" * 256})
    assert r.status_code == 400 and "'note'" in text(r)
    assert api.get("/productions/2010_July").json["note"] == "reprocessed <b>twice</b>"
    r = submit(client, "/productions/2010_July", "Save note", {"Note": ""})
    assert r.status_code == 302 and api.get("/productions/2010_July").json["note"] == ""


# ---------------------------------------------------------------- privileges and CSRF

ACTIONS = (("/productions", {"name": "nope", "session": "FastSim", "release": "311:V0.2.5"}),
           ("/productions/2010_July/status", {"status": "closed"}),
           ("/productions/2010_July/note", {"note": "nope"}))


def test_shifters_and_monitoring_users_see_no_actions_and_get_403(client, data):
    api = Api(client, data["token"])
    for groups in (["Shift"], ["webui"]):
        assert sign_in(client, new_token(f"u-{groups[0]}", groups)).status_code == 302
        for path in ("/productions", "/productions/2010_July"):
            html = client.get(path).get_data(as_text=True)
            buttons = [b["text"] for f in forms(html) for b in f.buttons]
            assert not {"Create production", "Close", "Open", "Save note"} & set(buttons), (groups, path)
        csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
        for path, fields in ACTIONS:
            r = client.post(path, data={"csrf": csrf, **fields})
            assert r.status_code == 403 and "create-productions" in text(r), (groups, path)
    p = api.get("/productions/2010_July").json
    assert p["status"] == "open" and p["note"] != "nope"
    assert api.get("/productions/nope").status_code == 404


def test_an_action_without_its_csrf_token_is_refused(client, data):
    api = manager(client)
    for path, fields in ACTIONS:
        assert client.post(path, data=fields).status_code == 400, path
        assert client.post(path, data={"csrf": "forged", **fields}).status_code == 400, path
    p = api.get("/productions/2010_July").json
    assert p["status"] == "open" and p["note"] != "nope"
    assert api.get("/productions/nope").status_code == 404
