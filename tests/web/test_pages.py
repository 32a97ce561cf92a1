"""The pages through the Flask test client: sign-in, every page, filters, escaping (SQLite and PostgreSQL)."""
import re

import pytest

from tests.server.conftest import new_token

from .conftest import HOSTILE, REMOVAL_SURL, sign_in

ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"


def pages(data):
    return ["/", "/jobs", f"/jobs/{data['done']}", f"/jobs/{data['done']}/log/1", "/productions",
            f"/productions/{data['production']}", f"/requests/{data['request']['id']}", "/sites",
            "/sites/INFN-TORINO", "/charts"]


def job_rows(html):
    """Runnums of the job monitor's rows, in page order."""
    return [int(n) for n in re.findall(r'<td data-col="runnum"><a href="/jobs/\d+">(\d+)</a>', html)]


def test_every_page_redirects_to_sign_in_without_a_session(client, data):
    for path in pages(data):
        r = client.get(path)
        assert r.status_code == 302, path
        assert r.location.startswith("/signin?next=")


def test_every_page_is_served_to_a_monitoring_user_and_escapes_hostile_text(reader, data):
    for path in pages(data):
        r = reader.get(path)
        assert r.status_code == 200, (path, r.data[:300])
        assert HOSTILE.encode() not in r.data, path
    for path in ("/productions", f"/jobs/{data['done']}", "/sites/INFN-TORINO"):
        assert ESCAPED in reader.get(path).get_data(as_text=True), path


def test_a_number_in_a_path_beyond_the_databases_integers_is_a_404_not_a_500(reader, data):
    """A row id or attempt past 2**63 overflowed the database's integer (a 500, as schemathesis found on
    the API); the pages take ids as the API does (`<id:...>`)."""
    huge = 10 ** 30
    for path in (f"/jobs/{huge}", f"/jobs/{data['done']}/log/{huge}", f"/sessions/FastSim/software/{huge}"):
        assert reader.get(path).status_code == 404, path


def test_sign_in_sets_a_lax_httponly_cookie_and_returns_to_next(client, data):
    token = new_token("watcher", ["webui"])
    page = client.get("/signin?next=/charts").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = client.post("/signin", data={"csrf": csrf, "token": token, "next": "/charts"})
    assert r.status_code == 302 and r.location == "/charts"
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert token not in cookie


def test_the_cookie_is_secure_over_https(client, data):
    r = sign_in_over(client, "https://localhost/", new_token("watcher", ["webui"]))
    assert r.status_code == 302 and "Secure" in r.headers["Set-Cookie"]


def sign_in_over(client, base, token):
    page = client.get("/signin", base_url=base).get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return client.post("/signin", base_url=base, data={"csrf": csrf, "token": token})


def test_a_wrong_token_is_refused(client, data):
    r = sign_in(client, "sbku_not-a-token")
    assert r.status_code == 401 and "not a valid API token" in r.get_data(as_text=True)
    assert client.get("/jobs").status_code == 302


def test_a_user_without_monitoring_is_refused(client, data):
    with client.application.app_context():
        from server import db, models as m
        with db.connection():
            m.Group.get_or_create(name="nobody")
    r = sign_in(client, new_token("stranger", ["nobody"]))
    assert r.status_code == 401 and "monitoring" in r.get_data(as_text=True)


def test_forms_without_the_csrf_token_are_refused(client, data):
    token = new_token("watcher", ["webui"])
    client.get("/signin")
    assert client.post("/signin", data={"token": token}).status_code == 400
    assert client.post("/signin", data={"token": token, "csrf": "forged"}).status_code == 400
    assert client.get("/jobs").status_code == 302


def test_sign_out_ends_the_session(reader):
    page = reader.get("/").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert reader.post("/signout", data={"csrf": "wrong"}).status_code == 400
    assert reader.post("/signout", data={"csrf": csrf}).status_code == 302
    assert reader.get("/").status_code == 302


def test_an_open_redirect_is_not_followed(client, data):
    page = client.get("/signin").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = client.post("/signin", data={"csrf": csrf, "token": new_token("w", ["webui"]), "next": "//evil.test/"})
    assert r.location == "/"


def test_job_monitor_filters_sorts_and_pages(reader, data):
    everything = job_rows(reader.get("/jobs").get_data(as_text=True))
    assert len(everything) == 4 and everything == sorted(everything, reverse=True)
    done = reader.get("/jobs?status=done").get_data(as_text=True)
    assert len(job_rows(done)) == 1 and "<b>1</b> jobs found" in done
    torino = job_rows(reader.get("/jobs?site=INFN-TORINO&sort=runnum").get_data(as_text=True))
    assert len(torino) == 2 and torino == sorted(torino)
    both = reader.get("/jobs?status=done&status=failed&error_code=30").get_data(as_text=True)
    assert len(job_rows(both)) == 1 and ">030<" in both
    first = reader.get("/jobs?per_page=3&sort=runnum").get_data(as_text=True)
    following = re.search(r'<a href="([^"]+)" rel="next">Next</a>', first).group(1).replace("&amp;", "&")
    paged = reader.get(following).get_data(as_text=True)   # keyset pages: the link carries the cursor
    assert job_rows(paged) == sorted(everything)[3:] and "Showing 4 to 4 of 4 entries" in paged
    hidden = reader.get("/jobs?cols=1&col=runnum&col=status").get_data(as_text=True)
    assert 'data-col="site"' not in hidden.split('id="jobs"')[1] and 'data-col="status"' in hidden


def test_job_monitor_shows_a_broad_total_as_an_estimate_like_the_api(reader, data, monkeypatch):
    from server import monitor_totals
    monkeypatch.setattr(monitor_totals, "COUNT_EXACT_UP_TO", 2)
    monkeypatch.setattr(monitor_totals, "SQLITE_COUNT_EXACT_UP_TO", 2)
    page = reader.get("/jobs").get_data(as_text=True)
    assert len(job_rows(page)) == 4 and "jobs found" in page.split("<b>about ")[1]
    assert "<b>1</b> jobs found" in reader.get("/jobs?status=done").get_data(as_text=True)


def test_job_monitor_bad_filter_is_a_400_page(reader):
    r = reader.get("/jobs?status=bogus")
    assert r.status_code == 400 and "text/html" in r.content_type and "bogus" in r.get_data(as_text=True)
    assert reader.get("/jobs?sort=nope").status_code == 400
    assert reader.get("/jobs/999999").status_code == 404


def test_job_detail_shows_history_outputs_transfers_and_log(reader, data):
    html = reader.get(f"/jobs/{data['done']}").get_data(as_text=True)
    assert "RUNNING-04" in html and "root://se.infn-t1.test//store/run_1.root" in html
    assert "0a1b2c3d" in html and "gfal2" in html and "stage 4 done" in html
    assert f"/jobs/{data['done']}/log/1" in html


def test_job_detail_shows_its_removal_requests(reader, data):
    html = reader.get(f"/jobs/{data['failed']}").get_data(as_text=True)
    removals = html.split('id="removals"')[1].split("</table>")[0]
    assert REMOVAL_SURL in removals and "<td>pending</td>" in removals
    assert 'id="removals"' not in reader.get(f"/jobs/{data['done']}").get_data(as_text=True)


def test_productions_list_counts_requests_by_status(reader, data):
    html = reader.get("/productions").get_data(as_text=True)
    assert "1 Request (0 open, 0 valid, 1 running, 0 closed)" in html
    assert "2010_July_test" not in html
    assert "2010_July_test" in reader.get("/productions?test=1").get_data(as_text=True)


def test_home_shows_the_users_statistics_and_activities(client, data):
    sign_in(client, data["token"])
    html = client.get("/").get_data(as_text=True)
    stats = html.split('id="session-stats"')[1].split("</table>")[0]
    # 4 jobs, 100 events generated: only the done job's (prepared and failed ones generated none)
    assert re.search(r"<td>FastSim</td><td class=\"num\">4</td><td class=\"num\">100</td>", stats)
    activities = html.split('id="activities"')[1].split("</table>")[0]
    assert activities.count("job-submission") == 2 and "request-created" in activities
    link = re.search(r'<a href="(/jobs\?[^"]+)">view details</a>', activities).group(1).replace("&amp;", "&")
    assert len(job_rows(client.get(link).get_data(as_text=True))) == 2
    sign_in(client, new_token("dev2", ["Developer"]))
    assert "You have launched no jobs yet." in client.get("/").get_data(as_text=True)


@pytest.mark.parametrize("days", [1, 30])
def test_charts_draw_bars(reader, data, days):
    html = reader.get(f"/charts?days={days}").get_data(as_text=True)
    chart = html.split('id="jobs-by-site"')[1].split("</svg>")[0]
    assert chart.count('class="bar"') >= 3   # INFN-T1 done + prepared, INFN-TORINO failed + prepared
    events = html.split('id="events-per-day"')[1].split("</svg>")[0]
    assert events.count('class="bar"') == 1 and "100 events" in events


def test_the_secret_key_is_made_once_per_data_dir_and_config_wins(tmp_path):
    from server.web import SECRET_KEY_FILE, stored_secret_key
    first, again = stored_secret_key(tmp_path / "data"), stored_secret_key(tmp_path / "data")
    assert first == again and len(first) == 64
    assert oct((tmp_path / "data" / SECRET_KEY_FILE).stat().st_mode & 0o777) == "0o600"
    from server import create_app
    app = create_app({"DB": f"sqlite:///{tmp_path}/other/sbk.db", "SECRET_KEY": "from-config"})
    assert app.secret_key == "from-config" and not (tmp_path / "other" / SECRET_KEY_FILE).exists()
