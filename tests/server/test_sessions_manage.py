"""Session management rules (server/sessions.py) through the API: releases edited only while unused,
retired only while no open production uses them, allowed values kept while a request uses them."""
import argparse

import pytest

from server.client import Conflict
from server.client import cli as client_commands
from server.client.output import Output
from server.client.sessions import cmd_software
from tests.client.inprocess import in_process

from .conftest import Api, new_token

RELEASE = {"name": "PacProductionApp", "version": "V0.3.0", "revision": 1,
           "lfn": "lfn:/grid/superbvo.org/production/FastSim/releases/V0.3.0.tgz", "adler32": "0a0b0c0d",
           "workdir": "FastSim/V0.3.0", "exe": "bin/PacProduction", "env": {"BFROOT": "/opt/superb"}}


def release_of(api, version, revision):
    return next(sw for sw in api.get("/sessions/FastSim").json["software"]
                if (sw["version"], sw["revision"]) == (version, revision))


def test_a_new_release_is_edited_and_shows_retired(api, production):
    r = api.post("/sessions/FastSim/software", json=RELEASE)
    assert r.status_code == 201 and r.json["retired"] is False
    sw = r.json
    r = api.patch(f"/sessions/FastSim/software/{sw['id']}", json={"exe": "bin/Other", "env": {"A": "1"}})
    assert r.status_code == 200, r.json
    assert (r.json["exe"], r.json["env"], r.json["version"]) == ("bin/Other", {"A": "1"}, "V0.3.0")
    # the same version and revision as another release: 409
    r = api.patch(f"/sessions/FastSim/software/{sw['id']}", json={"version": "V0.2.5", "revision": 311})
    assert r.status_code == 409 and r.json["error"] == "duplicate-software"
    r = api.patch(f"/sessions/FastSim/software/{sw['id']}", json={"lfn": "lfn:/grid/x/not-a-tarball"})
    assert r.status_code == 400
    r = api.patch(f"/sessions/FastSim/software/{sw['id']}", json={"colour": "red"})
    assert r.status_code == 400 and "colour" in r.json["message"]
    assert api.patch("/sessions/FastSim/software/99999", json={"retired": True}).status_code == 404
    assert api.patch(f"/sessions/FullSim/software/{sw['id']}", json={"retired": True}).status_code == 404
    # an unused release retires and comes back
    assert api.patch(f"/sessions/FastSim/software/{sw['id']}", json={"retired": True}).json["retired"] is True
    assert release_of(api, "V0.3.0", 1)["retired"] is True
    assert api.patch(f"/sessions/FastSim/software/{sw['id']}", json={"retired": False}).json["retired"] is False


def test_a_used_release_is_not_edited_and_retires_only_once_its_productions_are_closed(api, production):
    sw = release_of(api, "V0.2.5", 311)
    r = api.patch(f"/sessions/FastSim/software/{sw['id']}", json={"exe": "bin/Other"})
    assert r.status_code == 409 and r.json["error"] == "release-used" and "2010_July" in r.json["message"]
    r = api.patch(f"/sessions/FastSim/software/{sw['id']}", json={"retired": True})
    assert r.status_code == 409 and r.json["error"] == "release-in-use" and "2010_July" in r.json["message"]
    assert api.patch("/productions/2010_July", json={"status": "closed"}).status_code == 200
    r = api.patch(f"/sessions/FastSim/software/{sw['id']}", json={"retired": True})
    assert r.status_code == 200 and r.json["retired"] is True
    # still used by the closed production: no edit, but a restore
    assert api.patch(f"/sessions/FastSim/software/{sw['id']}", json={"exe": "bin/X"}).status_code == 409
    assert api.patch(f"/sessions/FastSim/software/{sw['id']}", json={"retired": False}).json["retired"] is False


def test_an_allowed_value_a_request_uses_is_not_taken_away(api, production):
    req = production["request"]["id"]
    r = api.post("/sessions/FastSim/parameters", json={"name": "Analysis", "allowed": ["Generics"]})
    assert r.status_code == 409 and r.json["error"] == "value-in-use"
    assert f"request {req}" in r.json["message"] and "HadRecoilCocktail" in r.json["message"]
    # restricting a parameter that allowed any value counts too
    r = api.post("/sessions/FastSim/parameters", json={"name": "Geometry", "allowed": ["DG_3"]})
    assert r.status_code == 409 and "DG_4" in r.json["message"]
    r = api.post("/sessions/FastSim/parameters", json={"name": "Analysis",
                                                        "allowed": ["HadRecoilCocktail", "Generics", "Tau"]})
    assert r.status_code == 200
    r = api.post("/sessions/FastSim/parameters", json={"name": "Geometry", "allowed": []})
    assert r.status_code == 200
    params = {p["name"]: p["allowed"] for p in api.get("/sessions/FastSim").json["parameters"]}
    assert params["Analysis"] == ["HadRecoilCocktail", "Generics", "Tau"] and params["Geometry"] == []


def test_a_session_description_and_payload_module_change(api, production):
    r = api.patch("/sessions/FastSim", json={"description": "the fast simulation", "payload_module": "fastsim2"})
    assert r.status_code == 200 and (r.json["description"], r.json["payload_module"]) == (
        "the fast simulation", "fastsim2")
    assert api.patch("/sessions/FastSim", json={"payload_module": "no spaces"}).status_code == 400
    assert api.patch("/sessions/Nope", json={"description": ""}).status_code == 404


def test_session_changes_need_create_productions(api, production, client):
    shifter = Api(client, new_token("shifter", ["Shift"]))
    sw = release_of(api, "V0.2.5", 311)
    for method, path, body in (("PATCH", "/sessions/FastSim", {"description": "x"}),
                               ("PATCH", f"/sessions/FastSim/software/{sw['id']}", {"retired": True})):
        assert shifter.call(method, path, json=body).status_code == 403


def test_sbk_software_retire_and_restore(api, production, capsys):
    sw = release_of(api, "V0.2.5", 311)
    out, client = Output(), in_process(api)
    run = cmd_software
    with pytest.raises(Conflict, match="release-in-use"):
        run(client, out, argparse.Namespace(action="retire", session="FastSim", id=sw["id"]))
    assert api.patch("/productions/2010_July", json={"status": "closed"}).status_code == 200
    run(client, out, argparse.Namespace(action="retire", session="FastSim", id=sw["id"]))
    assert "software PacProductionApp V0.2.5 311 of FastSim retired" in capsys.readouterr().out
    run(client, out, argparse.Namespace(action="list", session="FastSim"))
    assert "retired" in capsys.readouterr().out.splitlines()[1]
    run(client, out, argparse.Namespace(action="restore", session="FastSim", id=sw["id"]))
    assert "V0.2.5 311 of FastSim restored" in capsys.readouterr().out
    # the parser knows the commands
    parser = argparse.ArgumentParser()
    client_commands.add_commands(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["software", "retire", "FastSim", "3"]).id == 3


def test_a_release_in_a_shared_area_and_a_sessions_image_reach_the_job_description(api, production):
    """software.path instead of a tarball, a session's container image: both in the description a wrapper
    parses (shared.jobdesc), and a release is one or the other."""
    from shared.jobdesc import parse_job_description
    r = api.post("/sessions/FastSim/software", json={
        "name": "PacProductionApp", "version": "V0.2.6", "revision": 1, "path": "/cvmfs/superbvo.org/FastSim/V0.2.6",
        "workdir": "FastSim/V0.2.6", "exe": "bin/PacProduction"})
    assert r.status_code == 201, r.json
    assert (r.json["path"], r.json["lfn"], r.json["adler32"]) == ("/cvmfs/superbvo.org/FastSim/V0.2.6", None, None)
    both = api.post("/sessions/FastSim/software", json={
        "name": "PacProductionApp", "version": "V0.2.7", "path": "/cvmfs/x", "lfn": "lfn:/grid/x.tgz",
        "adler32": "00000001", "workdir": "w", "exe": "e"})
    assert both.status_code == 400 and "exclude each other" in both.json["message"]
    relative = api.post("/sessions/FastSim/software", json={
        "name": "PacProductionApp", "version": "V0.2.7", "path": "cvmfs/x", "workdir": "w", "exe": "e"})
    assert relative.status_code == 400
    assert api.patch("/sessions/FastSim", json={"container_image": "/cvmfs/unpacked.cern.ch/el9"}).status_code == 200
    assert api.post("/productions", json={"name": "2026_Area", "session": "FastSim", "version": "V0.2.6",
                                          "revision": 1}).status_code == 201
    req = api.post("/requests", json={"production": "2026_Area", "from": production["request"]["id"],
                                      "output_lfn": "lfn:/grid/superbvo.org/production/FastSim/2026_Area/out"}).json
    assert api.patch(f"/requests/{req['id']}", json={"status": "valid"}).status_code == 200
    job_id = api.post("/submissions", json={"production": "2026_Area", "bulks": [
        {"request": req["id"], "sites": ["INFN-T1"], "runs": 1, "events": 10}]}).json["job_ids"][0]
    desc = api.get(f"/jobs/{job_id}/description").json
    assert desc["software"]["path"] == "/cvmfs/superbvo.org/FastSim/V0.2.6" and "lfn" not in desc["software"]
    assert desc["container"] == {"image": "/cvmfs/unpacked.cern.ch/el9"}
    parsed = parse_job_description(desc)
    assert parsed.software.path == "/cvmfs/superbvo.org/FastSim/V0.2.6" and parsed.container.image.endswith("el9")
    assert api.patch("/sessions/FastSim", json={"container_image": ""}).status_code == 200
    assert "container" not in api.get(f"/jobs/{job_id}/description").json
