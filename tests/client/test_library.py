"""server/client/library.py: the Client scripts import, against the real app (in-process, both databases)."""
import pytest

from server.client import AuthError, BadInput, Client, Conflict, NotFound, Page, Refused, Unreachable
from server.client.library import job_filters, load_settings
from server.xrootd_se import free_port

from .conftest import event, new_token, submit
from .inprocess import in_process


def test_jobs_come_page_by_page_through_the_cursor(api, production):
    made = submit(api, production, runs=5, sites=("INFN-T1", "INFN-TORINO"))["job_ids"]
    client = in_process(api)
    pages = list(client.jobs(production=production["production"], status=["pending"], per_page=3))
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert all(isinstance(p, Page) and p.total == 10 for p in pages)
    assert [p.next is None for p in pages] == [False, False, False, True]
    assert [j["id"] for page in pages for j in page] == sorted(made)
    # filters as lists and shortcuts, as the job monitor's
    assert [len(p) for p in client.jobs(production=[production["production"], "nosuch"], status=["done"])] == [0]
    assert sum(len(p) for p in client.jobs(site=["INFN-TORINO"], status="prepared")) == 5


def test_a_done_job_and_its_filters(api, production):
    job_id, other = submit(api, production, runs=2)["job_ids"]
    token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
    assert api.as_(token).post(f"/jobs/{job_id}/events",
                               json=[event(1), event(2, "done", code=0)]).status_code == 200
    client = in_process(api)
    done = [j for page in client.jobs(status=["done"]) for j in page]
    assert [j["id"] for j in done] == [job_id]
    assert client.job(job_id)["status"] == "done"
    assert [j["id"] for page in client.jobs(status="notdone") for j in page] == [other]


def test_pages_follow_the_cursor_past_an_estimated_total():
    """`sbk submit --wait` reads every prepared job even when the total is a low estimate."""
    ids = list(range(1, 8))

    class Estimating(Client):
        def get(self, path, **params):
            start = int(params.get("after", 0))
            chunk = ids[start:start + params["per_page"]]
            more = start + len(chunk) < len(ids)
            return {"jobs": [{"id": i} for i in chunk], "total": 3, "total_is_estimate": True,
                    "next": str(start + len(chunk)) if more else None}

    pages = list(Estimating("http://sbk.test", "t").jobs(per_page=2))
    assert [j["id"] for page in pages for j in page] == ids and pages[0].total_is_estimate


def test_errors_are_typed_with_the_servers_codes(api, production):
    client = in_process(api)
    with pytest.raises(NotFound) as caught:
        client.job(999999)
    assert (caught.value.status, caught.value.error) == (404, "not-found") and isinstance(caught.value, Refused)
    with pytest.raises(Conflict) as caught:
        client.create_session("FastSim")
    assert (caught.value.status, caught.value.error) == (409, "duplicate-session")
    request_id = production["request"]["id"]
    with pytest.raises(Conflict) as caught:
        client.update_request(request_id, status="closed")
    assert caught.value.error == "illegal-transition"
    with pytest.raises(BadInput) as caught:   # the server's 400 names the field
        client.jobs_page(sort="colour")
    assert caught.value.status == 400 and "sort" in str(caught.value)
    with pytest.raises(BadInput) as caught:   # refused before anything is sent
        next(client.jobs(status=["finished"]))
    assert caught.value.status is None and "unknown status 'finished'" in str(caught.value)
    with pytest.raises(AuthError) as caught:
        in_process(api, token="sbku_not-a-real-token").me()
    assert caught.value.status == 401
    shifter = in_process(api, token=new_token("shifter", ["Shift"]))
    with pytest.raises(AuthError) as caught:
        shifter.create_session("Other")
    assert caught.value.status == 403


def test_an_unreachable_server_and_bad_settings():
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Unreachable, match=f"cannot reach the server at {dead}"):
        Client(dead, "sbku_x", timeout_s=5).me()
    with pytest.raises(BadInput, match="http:// or https://"):
        Client("ftp://nowhere", "x")
    with pytest.raises(AuthError, match="no API token"):
        load_settings(environ={"XDG_CONFIG_HOME": "/nonexistent", "SBK_URL": dead})
    settings = load_settings(token="t", environ={"XDG_CONFIG_HOME": "/nonexistent", "SBK_URL": dead + "/"})
    assert (settings.url, settings.token, settings.source) == (dead, "t", "environment")


def test_job_filters_become_the_apis_query():
    assert job_filters(production=["A", "B"], request=[1, 2], status=["pending", "done"], retried=True) == {
        "production": "A,B", "request": "1,2", "status": "prepared,submitted,running,done", "retried": "true"}
    assert job_filters(status="all", q="1000") == {
        "status": "prepared,submitted,running,done,failed,sys-failed,timeout", "q": "1000"}
