"""The People page (Developer group only): users, groups and tokens; create a user (its token shown once),
create and revoke tokens; expired and revoked tokens end web sessions. Flask test client, SQLite and
PostgreSQL; forms are filled by their labels and sent by their buttons' text, as a person would."""
import datetime
import re
from html import unescape
from html.parser import HTMLParser

from werkzeug.datastructures import MultiDict

from server import db
from server import models as m
from tests.server.conftest import Api, new_token

from .conftest import sign_in


class Forms(HTMLParser):
    """The forms of a page: their controls, buttons' text, and every label's text by the id it names."""

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.forms, self.labels, self._form, self._text, self._select = [], {}, None, None, None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._form = {"action": a.get("action"), "controls": [], "buttons": []}
            self.forms.append(self._form)
        elif tag in ("input", "select", "textarea") and self._form is not None:
            control = dict(a, tag=tag, options=[])
            self._form["controls"].append(control)
            self._select = control if tag == "select" else None
        elif tag == "option" and self._select is not None:
            self._select["options"].append((a.get("value"), "selected" in a))
        elif tag in ("label", "button"):
            self._text = (tag, a.get("for"), [])

    def handle_data(self, data):
        if self._text:
            self._text[2].append(data)

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif self._text and tag == self._text[0]:
            kind, for_id, parts = self._text
            text = " ".join("".join(parts).split())
            if kind == "label" and for_id:
                self.labels[for_id] = text
            elif kind == "button" and self._form is not None:
                self._form["buttons"].append(text)
            self._text = None


def submit(client, html, button, fill=None, tick=(), untick=(), csrf=True, **kw):
    """Press the button `button` of the page `html`: fields named by their labels' text."""
    page = Forms(html)
    matches = [f for f in page.forms if button in f["buttons"]]
    assert matches, f"no button {button!r}"
    form, fill = matches[0], dict(fill or {})
    data = []
    for c in form["controls"]:
        label = page.labels.get(c.get("id"))
        if c["tag"] == "input" and c.get("type") == "checkbox":
            if (("checked" in c) or label in tick) and label not in untick:
                data.append((c["name"], c.get("value", "on")))
        elif c["tag"] == "select":
            chosen = [v for v, selected in c["options"] if selected] or [c["options"][0][0]]
            data.append((c["name"], fill.pop(label, chosen[0])))
        elif c.get("name") == "csrf" and not csrf:
            continue
        else:
            data.append((c["name"], fill.pop(label, c.get("value", ""))))
    assert not fill, f"no fields labelled {sorted(fill)}"
    return client.post(form["action"], data=MultiDict(data), **kw)


def refused_line(html):
    return unescape(re.search(r'<p class="error" role="alert" id="refused">([^<]*)</p>', html).group(1))


def developer(client):
    token = new_token("boss", ["Developer"])
    assert sign_in(client, token).status_code == 302
    return token


def token_ids(user):
    with db.connection():
        return [t.id for t in m.ApiToken.select().join(m.User).where(m.User.name == user).order_by(m.ApiToken.id)]


def test_a_developer_creates_a_user_whose_shown_token_works_on_the_api(client, data):
    developer(client)
    page = client.get("/people").get_data(as_text=True)
    assert 'href="/people"' in page   # the menu entry
    r = submit(client, page, "Create user", fill={"User name": "newbie", "Token label": "laptop",
                                                  "Token expires in (days)": "30"}, tick=("Shift",))
    assert r.status_code == 201 and r.headers["Cache-Control"] == "no-store"
    shown = r.get_data(as_text=True)
    assert "it will not be shown again" in shown
    token = re.search(r'id="new-token" type="text" readonly size="70" value="(sbku_[^"]+)"', shown).group(1)
    me = Api(client, token).get("/me").json
    assert (me["name"], me["groups"]) == ("newbie", ["Shift", "webui"])   # webui is ticked by default
    # the list shows the user, groups and the token's label and expiry, never a token or hash
    page = client.get("/people").get_data(as_text=True)
    row = page.split('id="user-newbie"')[1].split("</tr>\n  \n")[0]
    assert "laptop" in row and "Shift" in row and "never" not in row.split("laptop")[1].split("</tr>")[0]
    with db.connection():
        hashes = [t.token_hash for t in m.ApiToken.select()]
    assert token not in page and not any(h in page for h in hashes)
    assert "user-created" in client.get("/").get_data(as_text=True)


def test_a_refused_user_keeps_what_was_typed(client, data):
    developer(client)
    page = client.get("/people").get_data(as_text=True)
    r = submit(client, page, "Create user", fill={"User name": "dev", "Token label": "kept label"})
    html = r.get_data(as_text=True)
    assert r.status_code == 409 and "already exists" in refused_line(html)
    assert 'value="kept label"' in html and 'id="user-name" type="text" name="name" value="dev"' in html
    r = submit(client, page, "Create user", fill={"User name": "x y"}, untick=("webui",))
    assert r.status_code == 400 and "'name' has an invalid value" in refused_line(r.get_data(as_text=True))
    r = submit(client, page, "Create user", fill={"User name": "z", "Token expires in (days)": "soon"})
    assert r.status_code == 400 and "whole number" in refused_line(r.get_data(as_text=True))


def test_a_developer_creates_and_revokes_a_users_token_and_the_web_session_ends(client, app, data):
    developer(client)
    watcher = new_token("watcher", ["webui"])
    other = app.test_client()
    assert sign_in(other, watcher).status_code == 302 and other.get("/").status_code == 200
    page = client.get("/people").get_data(as_text=True)
    r = submit(client, page, "Create token", fill={"For user": "watcher", "Token label": "second"})
    assert r.status_code == 201 and "New token for watcher" in r.get_data(as_text=True)
    second = re.search(r'value="(sbku_[^"]+)"', r.get_data(as_text=True)).group(1)
    assert Api(client, second).get("/me").json["name"] == "watcher"
    first = token_ids("watcher")[0]
    page = client.get("/people").get_data(as_text=True)
    row = page.split(f'id="token-{first}"')[1].split("</tr>")[0]
    r = submit(client, row, "Revoke")
    assert r.status_code == 302 and r.location == "/people"
    assert f"Token {first} (no label) of watcher revoked." in client.get("/people").get_data(as_text=True)
    assert Api(client, watcher).get("/me").status_code == 401
    assert Api(client, second).get("/me").status_code == 200
    # the session signed in with the revoked token ends at its next request
    r = other.get("/productions")
    assert r.status_code == 302 and r.location.startswith("/signin")
    assert "token was revoked or has expired" in other.get(r.location).get_data(as_text=True)
    assert other.get("/").status_code == 302


def test_an_expired_token_ends_the_web_session_and_cannot_sign_in(client, data):
    token = new_token("watcher", ["webui"])
    assert sign_in(client, token).status_code == 302 and client.get("/").status_code == 200
    with db.connection():
        m.ApiToken.update(expires_at=m.utcnow() - datetime.timedelta(seconds=1)).where(
            m.ApiToken.id == token_ids("watcher")[0]).execute()
    r = client.get("/jobs")
    assert r.status_code == 302 and r.location.startswith("/signin")
    r = sign_in(client, token)
    assert r.status_code == 401 and "This token has expired." in r.get_data(as_text=True)
    assert Api(client, token).get("/me").json["error"] == "token-expired"


def test_non_developers_get_the_403_page_and_no_menu_entry(reader, data):
    page = reader.get("/").get_data(as_text=True)
    assert 'href="/people"' not in page
    r = reader.get("/people")
    assert r.status_code == 403 and "membership of the Developer group" in r.get_data(as_text=True)
    # a manager with every privilege but outside the Developer group is refused too
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    for path in ("/people/users", "/people/tokens", f"/people/tokens/{token_ids('dev')[0]}/revoke"):
        r = reader.post(path, data={"csrf": csrf, "name": "eve", "groups": "Developer", "user": "dev"})
        assert r.status_code == 403, path
    assert token_ids("dev") and Api(reader, data["token"]).get("/me").status_code == 200
    with db.connection():
        assert not m.User.select().where(m.User.name == "eve").exists()


def test_people_forms_without_the_csrf_token_are_refused(client, data):
    developer(client)
    page = client.get("/people").get_data(as_text=True)
    assert submit(client, page, "Create user", fill={"User name": "eve"}, csrf=False).status_code == 400
    assert submit(client, page, "Create token", fill={"For user": "dev"}, csrf=False).status_code == 400
    dev_token = token_ids("dev")[0]
    row = page.split(f'id="token-{dev_token}"')[1].split("</tr>")[0]
    assert submit(client, row, "Revoke", csrf=False).status_code == 400
    assert token_ids("dev") == [dev_token] and Api(client, data["token"]).get("/me").status_code == 200
    with db.connection():
        assert not m.User.select().where(m.User.name == "eve").exists()


def test_a_developer_changes_a_users_groups_but_not_the_last_developers(client, data):
    developer(client)
    new_token("watcher", ["webui"])
    page = client.get("/people").get_data(as_text=True)
    row = page.split('id="user-watcher"')[1].split("</details>")[0]
    r = submit(client, row, "Save groups", tick=("Shift",))
    assert r.status_code == 302 and "Groups of watcher: Shift, webui." in client.get("/people").get_data(as_text=True)
    assert Api(client, data["token"]).get("/users").json["users"][-1]["groups"] == ["Shift", "webui"]
    # the developers can drop one another, not the last of them
    row = page.split('id="user-dev"')[1].split("</details>")[0]
    assert submit(client, row, "Save groups", untick=("Developer",), tick=("webui",)).status_code == 302
    row = page.split('id="user-boss"')[1].split("</details>")[0]
    r = submit(client, row, "Save groups", untick=("Developer",), tick=("webui",))
    assert r.status_code == 409 and "last member of the Developer group" in refused_line(r.get_data(as_text=True))
    assert submit(client, row, "Save groups", csrf=False).status_code == 400
