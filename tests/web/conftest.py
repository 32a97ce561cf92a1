"""Web page fixtures: the server tests' app (SQLite and PostgreSQL) with jobs in several states."""
import io
import re
import tarfile

import pytest

from tests.server.conftest import (  # noqa: F401  (fixtures used here by name)
    Api, app, client, db_url, event, make_production, new_token, postgres_cluster, submit)

HOSTILE = "<script>alert('x')</script>"
REMOVAL_SURL = "root://se.infn-t1.test//store/output/HadRecoilCocktail/DG_4/B0B0bar_SL/run_2.root.1.severus-upload"


def log_tarball(text):
    """A gzipped tarball holding one text file, like the wrapper's log."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = text.encode()
        info = tarfile.TarInfo("severus.log")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def populate(api):
    """A production with four jobs on two sites: one done (history, output, transfers, log), one failed 030,
    two prepared; hostile text in a note, a site description, an event and the log."""
    made = make_production(api)
    assert api.patch(f"/productions/{made['production']}", json={"note": HOSTILE}).status_code == 200
    assert api.patch("/sites/INFN-TORINO", json={"description": HOSTILE}).status_code == 200
    ids = submit(api, made, runs=2)["job_ids"] + submit(api, made, runs=2, sites=("INFN-TORINO",))["job_ids"]
    done_id, failed_id = ids[0], ids[2]
    for job_id in (done_id, failed_id):
        token = api.post(f"/jobs/{job_id}/token").json["server"]["token"]
        job = api.as_(token)
        job.post(f"/jobs/{job_id}/events", json=event(1, step="RUNNING-04", message=HOSTILE))
        if job_id == failed_id:
            # a file its attempt could not delete (the SE died): a removal request on the job's page
            assert job.post(f"/jobs/{job_id}/removals", json=[{"site": "INFN-T1", "surl": REMOVAL_SURL}]).json["filed"] == 1
            job.post(f"/jobs/{job_id}/events", json=event(2, "failed", code=30, message="payload failed"))
            continue
        lfn = "lfn:/grid/superbvo.org/production/FastSim/2010_July/output/run_1.root"
        assert job.post("/catalog/replicas", json={
            "lfn": lfn, "site": "INFN-T1", "surl": "root://se.infn-t1.test//store/run_1.root",
            "size": 1234, "adler32": "0a1b2c3d"}).status_code in (200, 201)
        assert job.put(f"/jobs/{job_id}/log?attempt=1", data=log_tarball(f"stage 4 done\n{HOSTILE}\n"),
                       content_type="application/gzip").status_code == 200
        transfers = [{"tool": "gfal2", "direction": "out", "source": "run_1.root",
                      "destination": "root://se.infn-t1.test//store/run_1.root", "seconds": 0.5,
                      "size": 1234, "error": None}]
        job.post(f"/jobs/{job_id}/events", json=event(2, "done", code=0, message="ok",
                                                      report={"transfers": transfers}))
    return {"ids": ids, "done": done_id, "failed": failed_id, **made}


def sign_in(client, token):
    """Sign `client` in through the form; return the response."""
    page = client.get("/signin").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return client.post("/signin", data={"csrf": csrf, "token": token, "next": "/"})


@pytest.fixture()
def data(client):
    token = new_token("dev", ["Developer"])
    return dict(populate(Api(client, token)), token=token)


@pytest.fixture()
def reader(client, data):
    """The test client signed in as a user with only the monitoring privilege."""
    assert sign_in(client, new_token("watcher", ["webui"])).status_code == 302
    return client
