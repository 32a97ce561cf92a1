"""People on the API: tokens (label, expiry, revocation, never their hash), users and groups, auto-sub."""
import datetime
import json
import os
import re
import subprocess
import sys
import threading

import pytest
from werkzeug.serving import make_server

from server import cli, db
from server import models as m

from .conftest import Api, new_token


def expire(token_id):
    """Move a token's expiry into the past (as if its days had gone by)."""
    with db.connection():
        m.ApiToken.update(expires_at=m.utcnow() - datetime.timedelta(seconds=1)).where(
            m.ApiToken.id == token_id).execute()


def hashes():
    with db.connection():
        return [t.token_hash for t in m.ApiToken.select()]


def test_a_user_lists_his_tokens_without_their_hashes(client, api):
    made = api.post("/tokens", json={"label": "laptop", "expires_in_days": 30})
    assert made.status_code == 201 and made.json["token"].startswith("sbku_")
    assert set(made.json) == {"id", "user", "label", "created_at", "expires_at", "expired", "token"}
    expires = datetime.datetime.fromisoformat(made.json["expires_at"].rstrip("Z"))
    assert abs(expires - (m.utcnow() + datetime.timedelta(days=30))) < datetime.timedelta(minutes=1)
    r = api.get("/tokens")
    assert r.status_code == 200
    listed = r.json["tokens"]
    assert [(t["user"], t["label"], t["expires_at"] is None) for t in listed] == [("dev", "", True),
                                                                                 ("dev", "laptop", False)]
    text = r.get_data(as_text=True)
    assert all(h not in text for h in hashes()) and made.json["token"] not in text and api.token not in text
    assert all("token" not in t and "token_hash" not in t for t in listed)
    # the new token is a working token of the same user
    assert api.as_(made.json["token"]).get("/me").json["name"] == "dev"


def test_an_expired_token_is_refused_with_401(client, api):
    made = api.post("/tokens", json={"label": "short", "expires_at": (m.utcnow() + datetime.timedelta(hours=1))
                                     .isoformat() + "Z"}).json
    short = api.as_(made["token"])
    assert short.get("/me").status_code == 200
    expire(made["id"])
    for call in (lambda: short.get("/me"), lambda: short.get("/jobs"), lambda: short.post("/tokens", json={})):
        r = call()
        assert r.status_code == 401 and r.json["error"] == "token-expired", r.json
        assert "token expired" in r.json["message"]
    assert [t["expired"] for t in api.get("/tokens").json["tokens"]] == [False, True]


def test_revoking_ends_the_tokens_use_and_is_recorded(client, api):
    made = api.post("/tokens", json={"label": "ci"}).json
    ci = api.as_(made["token"])
    assert ci.get("/me").status_code == 200
    r = api.delete(f"/tokens/{made['id']}")
    assert r.status_code == 200 and r.json["revoked"]["label"] == "ci" and "token" not in r.json["revoked"]
    r = ci.get("/me")
    assert r.status_code == 401 and r.json["error"] == "unauthorized"
    assert api.delete(f"/tokens/{made['id']}").status_code == 404
    activity = api.get("/activities").json["activities"][0]
    assert (activity["type"], activity["user"], activity["ref"]) == ("token-revoked", "dev",
                                                                      {"token": made["id"], "user": "dev"})
    # a user may revoke the token he is calling with: the next call is refused
    own = api.get("/tokens").json["tokens"][0]
    assert api.delete(f"/tokens/{own['id']}").status_code == 200
    assert api.get("/me").status_code == 401


def test_a_non_developer_manages_only_his_own_tokens(client, api):
    shifter = Api(client, new_token("shift", ["Shift"]))
    mine = shifter.post("/tokens", json={"label": "mine", "user": "shift"})
    assert mine.status_code == 201 and mine.json["user"] == "shift"
    assert [t["label"] for t in shifter.get("/tokens").json["tokens"]] == ["", "mine"]
    dev_token = api.get("/tokens").json["tokens"][0]
    refused = [shifter.get("/tokens?user=dev"), shifter.post("/tokens", json={"user": "dev"}),
               shifter.delete(f"/tokens/{dev_token['id']}"), shifter.get("/users"),
               shifter.post("/users", json={"name": "eve", "groups": ["Developer"]}),
               shifter.patch("/users/shift", json={"groups": ["Developer"]})]
    for r in refused:
        assert r.status_code == 403 and r.json["error"] == "forbidden", r.json
    assert api.get("/me").status_code == 200   # the developer's token survived
    assert shifter.delete(f"/tokens/{mine.json['id']}").status_code == 200


def test_a_developer_creates_users_and_manages_anyones_tokens(client, api):
    r = api.post("/users", json={"name": "alice", "groups": ["Shift", "webui"], "label": "first",
                                 "expires_in_days": 7})
    assert r.status_code == 201, r.json
    assert r.json["user"] == {"name": "alice", "groups": ["Shift", "webui"], "auto_sub": True,
                              "created_at": r.json["user"]["created_at"]}
    alice = Api(client, r.json["token"])
    me = alice.get("/me").json
    assert (me["name"], me["groups"], "shifter-submission" in me["privileges"]) == ("alice", ["Shift", "webui"], True)
    users = {u["name"]: u for u in api.get("/users").json["users"]}
    assert users["alice"]["groups"] == ["Shift", "webui"] and users["alice"]["tokens"][0]["label"] == "first"
    assert r.json["token"] not in api.get("/users").get_data(as_text=True)
    second = api.post("/tokens", json={"user": "alice", "label": "second"})
    assert second.status_code == 201 and second.json["user"] == "alice"
    assert [t["label"] for t in api.get("/tokens?user=alice").json["tokens"]] == ["first", "second"]
    assert api.delete(f"/tokens/{r.json['token_info']['id']}").status_code == 200
    assert alice.get("/me").status_code == 401 and Api(client, second.json["token"]).get("/me").status_code == 200
    kinds = [a["type"] for a in api.get("/activities").json["activities"]]
    assert kinds[:3] == ["token-revoked", "token-created", "user-created"]
    assert api.patch("/users/alice", json={"groups": ["FastProdMgr"]}).json["groups"] == ["FastProdMgr"]
    assert api.get("/tokens?user=nobody").status_code == 404


@pytest.mark.parametrize("body, status, error", [
    ({"name": "dev", "groups": ["webui"]}, 409, "user-exists"),
    ({"name": "bob", "groups": ["Wizards"]}, 400, "unknown-group"),
    ({"name": "bob", "groups": []}, 400, "bad-request"),
    ({"name": "bob"}, 400, "schema-error"),
    ({"name": "bob b", "groups": ["webui"]}, 400, "schema-error"),
    ({"name": "x" * 65, "groups": ["webui"]}, 400, "schema-error"),
    ({"name": "bob", "groups": ["webui"], "expires_in_days": 0}, 400, "schema-error"),
    ({"name": "bob", "groups": ["webui"], "expires_in_days": 5000}, 400, "schema-error"),
    ({"name": "bob", "groups": ["webui"], "expires_in_days": 1, "expires_at": "2099-01-01"}, 400, "bad-request"),
    ({"name": "bob", "groups": ["webui"], "expires_at": "2001-01-01T00:00:00Z"}, 400, "bad-request"),
    ({"name": "bob", "groups": ["webui"], "expires_at": "soon"}, 400, "bad-request"),
    ({"name": "bob", "groups": ["webui"], "label": "x" * 65}, 400, "schema-error"),
    ({"name": "bob", "groups": ["webui"], "admin": True}, 400, "schema-error"),
])
def test_bad_user_bodies_get_one_line_and_a_4xx(api, body, status, error):
    r = api.post("/users", json=body)
    assert (r.status_code, r.json["error"]) == (status, error), r.json
    assert "bob" not in [u["name"] for u in api.get("/users").json["users"]]


def test_the_last_developer_keeps_the_developer_group(client, api):
    r = api.patch("/users/dev", json={"groups": ["webui"]})
    assert r.status_code == 409 and r.json["error"] == "last-developer"
    api.post("/users", json={"name": "dev2", "groups": ["Developer"]})
    assert api.patch("/users/dev", json={"groups": ["webui"]}).json["groups"] == ["webui"]
    assert api.get("/users").status_code == 403   # no longer a developer
    assert api.patch("/users/nobody", json={"groups": ["webui"]}).status_code == 403


def test_auto_sub_is_switched_by_patch_me(client, api):
    assert api.get("/me").json["auto_sub"] is True
    r = api.patch("/me", json={"auto_sub": False})
    assert r.status_code == 200 and r.json["auto_sub"] is False
    assert api.get("/me").json["auto_sub"] is False
    assert [u["auto_sub"] for u in api.get("/users").json["users"] if u["name"] == "dev"] == [False]
    for body in ({"auto_sub": "no"}, {}, {"auto_sub": True, "name": "x"}):
        assert api.patch("/me", json=body).status_code == 400
    viewer = Api(client, new_token("viewer", ["webui"]))
    r = viewer.patch("/me", json={"auto_sub": False})
    assert r.status_code == 403 and viewer.get("/me").json["auto_sub"] is True


def test_sbk_user_add_takes_a_label_and_an_expiry(client, api, db_url):
    env = dict(os.environ, SBK_DB=db_url)
    out = subprocess.run([sys.executable, "-m", "server.cli", "user", "add", "carol", "--groups", "webui",
                          "--label", "batch", "--expires-days", "3"], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert Api(client, token).get("/me").json["name"] == "carol"
    listed = api.get("/tokens?user=carol").json["tokens"]
    assert [t["label"] for t in listed] == ["batch"] and listed[0]["expires_at"]
    bad = subprocess.run([sys.executable, "-m", "server.cli", "user", "add", "carol", "--expires-days", "0"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "expires" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture()
def live_url(app):
    """The app served over HTTP in a thread (the client talks `requests`)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(5)


def test_sbk_token_list_create_revoke(api, live_url, capsys, monkeypatch):
    monkeypatch.setenv("SBK_URL", live_url)
    monkeypatch.setenv("SBK_TOKEN", api.token)

    def sbk(*args):
        capsys.readouterr()
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = sbk("token", "create", "--label", "cron", "--expires-days", "5")
    made = out.strip()
    assert code == 0 and made.startswith("sbku_") and "shown this once" in err
    code, out, _ = sbk("token", "list")
    assert code == 0 and re.search(r"\d+\s+dev\s+cron\s+\S+\s+\d{4}-", out) and made not in out
    assert sbk("me", "--token", made)[1].count("auto-sub:") == 1
    cron_id = [t["id"] for t in api.get("/tokens").json["tokens"] if t["label"] == "cron"][0]
    code, out, _ = sbk("token", "revoke", str(cron_id))
    assert code == 0 and f"token {cron_id} of dev revoked" in out
    code, _, err = sbk("me", "--token", made)
    assert code == 4 and "401 unauthorized" in err
    api.post("/users", json={"name": "ann", "groups": ["webui"]})
    ann = json.loads(sbk("token", "create", "--user", "ann", "--json")[1])["token"]
    code, _, err = sbk("token", "list", "--user", "dev", "--token", ann)
    assert code == 4 and "403 forbidden" in err
