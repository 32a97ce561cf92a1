"""The home page: the auto-sub switch (the same core as PATCH /me), the job graph per session from the job
counters (never the jobs table). Flask test client, SQLite and PostgreSQL."""
import logging
import re

from tests.server.conftest import Api, new_token

from .conftest import sign_in
from .test_people_page import submit


def state(html):
    return re.search(r'<b id="auto-sub-state">(\w+)</b>', html).group(1)


def test_home_draws_the_jobs_of_each_session(client, data):
    sign_in(client, data["token"])
    html = client.get("/").get_data(as_text=True)
    chart = html.split('id="session-jobs"')[1].split("</svg>")[0]
    titles = re.findall(r"<title>([^<]+)</title>", chart)
    assert sorted(titles) == ["FastSim: 1 done", "FastSim: 1 failed", "FastSim: 2 prepared"]
    assert "Jobs by status for each session" in html


def test_home_reads_the_job_counters_not_the_jobs(client, data, caplog):
    sign_in(client, data["token"])
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        assert client.get("/").status_code == 200
    sql = [r.getMessage() for r in caplog.records if r.name == "peewee"]
    assert any('"job_count"' in q for q in sql)
    assert not [q for q in sql if re.search(r'(FROM|JOIN) "job"', q)]


def test_auto_sub_is_switched_on_the_page_and_seen_by_the_api(client, data):
    sign_in(client, data["token"])
    api = Api(client, data["token"])
    html = client.get("/").get_data(as_text=True)
    assert state(html) == "enabled"
    r = submit(client, html, "Disable auto-sub")
    assert r.status_code == 302 and r.location == "/"
    html = client.get("/").get_data(as_text=True)
    assert state(html) == "disabled" and "auto-sub disabled" in html
    assert api.get("/me").json["auto_sub"] is False
    # the API switches it back; the page shows it, and htmx gets the switch alone
    assert api.patch("/me", json={"auto_sub": True}).json["auto_sub"] is True
    html = client.get("/").get_data(as_text=True)
    assert state(html) == "enabled"
    r = submit(client, html, "Disable auto-sub", headers={"HX-Request": "true"})
    fragment = r.get_data(as_text=True)
    assert r.status_code == 200 and fragment.lstrip().startswith('<div id="auto-sub">')
    assert state(fragment) == "disabled" and "Enable auto-sub" in fragment and "<html" not in fragment
    r = submit(client, fragment, "Enable auto-sub")
    assert r.status_code == 302 and api.get("/me").json["auto_sub"] is True


def test_auto_sub_needs_a_submitter_and_the_csrf_token(client, reader, data):
    html = reader.get("/").get_data(as_text=True)
    assert state(html) == "enabled" and "Disable auto-sub" not in html   # no action button to read-only users
    csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
    assert reader.post("/home/auto-sub", data={"csrf": csrf}).status_code == 403
    shifter_token = new_token("shifter", ["Shift"])
    sign_in(reader, shifter_token)
    html = reader.get("/").get_data(as_text=True)
    assert submit(reader, html, "Disable auto-sub", csrf=False).status_code == 400
    assert Api(reader, shifter_token).get("/me").json["auto_sub"] is True
    assert submit(reader, html, "Disable auto-sub").status_code == 302
    assert Api(reader, shifter_token).get("/me").json["auto_sub"] is False
