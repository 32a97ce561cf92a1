"""The catalog: idempotent registration, mismatches, queries, deletion."""
from .conftest import started_job

LFN = "lfn:/grid/superbvo.org/production/FastSim/2010_July/output/run_1.root"


def replica(lfn=LFN, site="INFN-T1", size=10, adler32="0000abcd"):
    return {"lfn": lfn, "site": site, "surl": f"root://se/{lfn[5:]}", "size": size, "adler32": adler32}


def test_registration_is_idempotent_and_refuses_a_mismatch(api, production):
    job_id, token = started_job(api, production)
    wrapper = api.as_(token)
    assert wrapper.post("/catalog/replicas", json=replica()).status_code == 201
    assert wrapper.post("/catalog/replicas", json=replica()).status_code == 200
    r = wrapper.post("/catalog/replicas", json=replica(adler32="ffffffff"))
    assert r.status_code == 409 and r.json["error"] == "replica-mismatch"
    assert wrapper.post("/catalog/replicas", json=replica(site="INFN-BARI")).status_code == 201
    got = api.get("/catalog/replicas", query_string={"lfn": LFN}).json
    assert got["size"] == 10 and [x["site"] for x in got["replicas"]] == ["INFN-BARI", "INFN-T1"]
    outputs = api.get(f"/jobs/{job_id}").json["outputs"]
    assert {o["site"] for o in outputs} == {"INFN-T1", "INFN-BARI"}


def test_files_below_a_directory_recursively_and_sorted(api, production):
    _, token = started_job(api, production)
    wrapper = api.as_(token)
    for lfn in ("lfn:/a/d/z.root", "lfn:/a/d/sub/b.root", "lfn:/a/d0/no.root", "lfn:/a/dx.root"):
        wrapper.post("/catalog/replicas", json=replica(lfn=lfn))
    files = wrapper.get("/catalog/files", query_string={"dir": "lfn:/a/d"}).json["files"]
    assert [f["lfn"] for f in files] == ["lfn:/a/d/sub/b.root", "lfn:/a/d/z.root"]
    assert files[0]["replicas"][0]["site"] == "INFN-T1"


def test_a_list_is_registered_all_or_nothing(api, production):
    _, token = started_job(api, production)
    _, other = started_job(api, production)
    api.as_(other).post("/catalog/replicas", json=replica(lfn=LFN + ".b", adler32="0000ffff"))
    batch = [replica(), replica(lfn=LFN + ".b")]   # the second is another job's file, with other bytes
    r = api.as_(token).post("/catalog/replicas", json=batch)
    assert r.status_code == 409 and r.json["error"] == "replica-mismatch"
    assert api.get("/catalog/replicas", query_string={"lfn": LFN}).status_code == 404   # nothing half-done
    r = api.as_(token).post("/catalog/replicas", json=batch[:1] + [replica(lfn=LFN + ".c")])
    assert r.status_code == 201 and r.json["created"] == 2 and [f["lfn"] for f in r.json["files"]] == [LFN, LFN + ".c"]
    assert api.as_(token).post("/catalog/replicas", json=batch[:1]).json["created"] == 0   # a retry


def test_delete_by_the_registering_job_or_a_manager(api, production):
    _, token_a = started_job(api, production)
    _, token_b = started_job(api, production)
    api.as_(token_a).post("/catalog/replicas", json=replica())
    query = {"lfn": LFN, "site": "INFN-T1"}
    assert api.as_(token_b).delete("/catalog/replicas", query_string=query).status_code == 403
    assert api.as_(token_a).delete("/catalog/replicas", query_string=query).status_code == 200
    assert api.get("/catalog/replicas", query_string={"lfn": LFN}).status_code == 404


def test_bad_registrations_are_400(api, production):
    _, token = started_job(api, production)
    for bad in (replica(lfn="/no/scheme"), replica(lfn="lfn:/a/../b"), replica(size=-1),
                replica(adler32="XYZ"), {**replica(), "extra": 1}, [], [replica(), "x"], [replica(size=-1)]):
        r = api.as_(token).post("/catalog/replicas", json=bad)
        assert r.status_code == 400, bad
