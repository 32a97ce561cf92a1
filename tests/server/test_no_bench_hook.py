"""The shipped server has no benchmark hook (issue 12, finding 11).

The tokenless raw route that bench_server measures against once existed in
server/ behind SBK_BENCH_RAW=1; it changed a job's status and stored events
with no token. It now lives in bench/raw_app.py only: no setting, environment
or config of the shipped app brings it back.
"""
import importlib

import pytest

from server import create_app, db
from server import models as m

from .conftest import API, Api, event, make_production, new_token, submit

OLD_URL = API + "/bench/raw/{}/events"


def _close():
    close_all = getattr(db.database.obj, "close_all", None)
    close_all() if close_all else db.database.close()


def test_the_old_raw_route_is_a_404_even_with_sbk_bench_raw_set(db_url, monkeypatch):
    monkeypatch.setenv("SBK_BENCH_RAW", "1")
    app = create_app({"DB": db_url, "PUBLIC_URL": "http://sbk.test:8080", "BENCH_RAW": True})
    app.testing = True
    try:
        client = app.test_client()
        api = Api(client, new_token("dev", ["Developer"]))
        job_id = submit(api, make_production(api), runs=1)["job_ids"][0]
        token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
        for headers in ({}, {"Authorization": f"Bearer {token}"}):
            r = client.post(OLD_URL.format(job_id), json=[event(1), event(2)], headers=headers)
            assert r.status_code == 404, (headers, r.status_code, r.get_data(as_text=True)[:200])
        with db.connection():
            job = m.Job.get_by_id(job_id)
            assert (job.status, job.last_seq) == ("prepared", 0)
            assert m.Event.select().where(m.Event.job == job_id).count() == 0
        assert "bench" not in app.blueprints
        assert not [r.rule for r in app.url_map.iter_rules() if "bench" in r.rule]
    finally:
        _close()


@pytest.mark.parametrize("value", ["true", "yes", "on", "TRUE"])
def test_no_spelling_of_the_flag_registers_a_bench_route(value, tmp_path, monkeypatch):
    monkeypatch.setenv("SBK_BENCH_RAW", value)
    app = create_app({"DB": f"sqlite:///{tmp_path}/sbk.db"})
    try:
        assert not [r.rule for r in app.url_map.iter_rules() if "bench" in r.rule]
        assert app.test_client().post(OLD_URL.format(1), json=event(1)).status_code == 404
    finally:
        _close()


def test_the_server_package_has_no_bench_module():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("server.api.bench")
