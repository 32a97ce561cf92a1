"""Server fixtures: every test runs on SQLite and on a real PostgreSQL cluster."""
import pytest

from server import create_app, db
from server.auth import add_user
from tests.infra.postgres import postgres_available, start_cluster

API = "/api/v1"


@pytest.fixture(scope="session")
def postgres_cluster():
    if not postgres_available():
        pytest.fail("PostgreSQL 15 is not installed: run `make test` (it installs postgresql)")
    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/sbk.db"
    return request.getfixturevalue("postgres_cluster").new_database()


@pytest.fixture()
def app(db_url):
    app = create_app({"DB": db_url, "PUBLIC_URL": "http://sbk.test:8080", "HEARTBEAT_S": 60})
    app.testing = True
    yield app
    close_all = getattr(db.database.obj, "close_all", None)
    if close_all:
        close_all()   # let the throwaway database go
    else:
        db.database.close()


class Api:
    """The Flask test client with a bearer token and the /api/v1 prefix."""

    def __init__(self, client, token=None):
        self.client, self.token = client, token

    def as_(self, token):
        return Api(self.client, token)

    def call(self, method, path, **kwargs):
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return self.client.open(API + path, method=method, headers=headers, **kwargs)

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, json=None, **kw):
        return self.call("POST", path, json=json, **kw)

    def patch(self, path, json=None, **kw):
        return self.call("PATCH", path, json=json, **kw)

    def put(self, path, **kw):
        return self.call("PUT", path, **kw)

    def delete(self, path, **kw):
        return self.call("DELETE", path, **kw)


@pytest.fixture()
def client(app):
    return app.test_client()


def new_token(name, groups):
    with db.connection():
        return add_user(name, groups)


@pytest.fixture()
def api(client):
    """An Api as a Developer (every privilege)."""
    return Api(client, new_token("dev", ["Developer"]))


@pytest.fixture()
def production(api):
    """FastSim with one release, production 2010_July, a valid request and two sites."""
    return make_production(api)


def make_production(api, name="2010_July", input_mode="NONE"):
    """Create the seed's FastSim setup through the API; return a dict of what was made."""
    r = api.post("/sessions", json={
        "name": "FastSim", "payload_module": "fastsim",
        "parameters": [{"name": "Analysis", "allowed": ["HadRecoilCocktail", "Generics"]},
                       {"name": "Generator"}, {"name": "Geometry"}, {"name": "Background"}]})
    assert r.status_code in (201, 409), r.json
    r = api.post("/sessions/FastSim/software", json={
        "name": "PacProductionApp", "version": "V0.2.5", "revision": 311,
        "lfn": "lfn:/grid/superbvo.org/production/FastSim/2010_September/test_release/V0.2.5_SL-5.3_x86_64_rev311.tjz",
        "adler32": "1a2b3c4d", "workdir": "FastSim/V0.2.5", "exe": "bin/PacProduction",
        "env": {"BFROOT": "/opt/superb"}})
    assert r.status_code in (201, 409), r.json
    r = api.post("/productions", json={"name": name, "session": "FastSim", "version": "V0.2.5", "revision": 311})
    assert r.status_code == 201, r.json
    for site in ("INFN-T1", "INFN-TORINO"):
        r = api.post("/sites", json={"name": site, "bunch_size": 5})
        assert r.status_code in (201, 409), r.json
    r = api.post("/requests", json={
        "production": name, "min_runnum": 10000003, "events_per_job": 80000,
        "parameters": {"Analysis": "HadRecoilCocktail", "Generator": "B0B0bar_SL", "Geometry": "DG_4",
                       "Background": "MixSuperbBkg_NoPair.tcl"},
        "input_mode": input_mode,
        "input_paths": [] if input_mode == "NONE" else ["lfn:/grid/superbvo.org/production/FastSim/Input"],
        "output_lfn": f"lfn:/grid/superbvo.org/production/FastSim/{name}/output/HadRecoilCocktail/DG_4/B0B0bar_SL",
        "output_sites": ["INFN-T1"], "max_wct_s": 3600})
    assert r.status_code == 201, r.json
    request = r.json
    r = api.patch(f"/requests/{request['id']}", json={"status": "valid"})
    assert r.status_code == 200, r.json
    return {"production": name, "request": request}


def submit(api, production, runs=2, sites=("INFN-T1",), test=False, dry_run=False):
    """POST /submissions with one bulk; return the reply."""
    r = api.post("/submissions", json={
        "production": production["production"], "dry_run": dry_run,
        "bulks": [{"request": production["request"]["id"], "test": test, "sites": list(sites),
                   "runs": runs, "events": 100}]})
    assert r.status_code == (200 if dry_run else 201), r.json
    return r.json


def started_job(api, production):
    """A prepared job and its freshly minted job token: (job id, token)."""
    job_id = submit(api, production, runs=1)["job_ids"][0]
    desc = api.post(f"/jobs/{job_id}/token").json
    return job_id, desc["server"]["token"]


def event(seq, status="running", attempt=1, **extra):
    """One wrapper event."""
    d = {"attempt": attempt, "seq": seq, "time": 1700000000.0 + seq, "status": status}
    if status != "running":
        d.update(kind="final", code=extra.pop("code", 0))
    d.update(extra)
    return d
