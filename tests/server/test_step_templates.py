"""Step templates (issue 15, seed 001): a session names module instances, a request chooses a sequence of
them, and every job's description carries them resolved (`payload.steps`). Through the API, on both
databases; the same rules on the web desk and in `sbk`."""
import argparse

from server.client import cli as client_commands
from server.client.output import Output
from server.client.productions import cmd_request
from server.client.sessions import cmd_session
from shared.jobdesc import parse_job_description
from tests.client.inprocess import in_process

from .conftest import make_production, submit

SIM = {"name": "sim", "module": "fastsim"}
DQ = {"name": "dq", "module": "dq", "parameters": {"min_events": "10"}, "args": ["bin/check-outputs", "--strict"]}


def define(api, *templates):
    for template in templates:
        r = api.post("/sessions/FastSim/steps", json=template)
        assert r.status_code == 201, r.json
    return r.json


def test_a_session_defines_templates_and_refuses_bad_ones_in_one_line(api, production):
    session = define(api, SIM, DQ)
    assert [t["name"] for t in session["steps"]] == ["sim", "dq"]
    assert session["steps"][1] == {"name": "dq", "module": "dq", "parameters": {"min_events": "10"},
                                   "args": ["bin/check-outputs", "--strict"]}
    # an unused template may be replaced: 200
    r = api.post("/sessions/FastSim/steps", json=dict(DQ, args=["bin/other"]))
    assert r.status_code == 200 and r.json["steps"][1]["args"] == ["bin/other"]
    for bad, word in [({"name": "x y", "module": "dq"}, "name"), ({"name": "x"}, "module"),
                      ({"name": "x", "module": "dq", "colour": "red"}, "colour"),
                      ({"name": "x", "module": "dq", "parameters": {"a": 1}}, "parameters")]:
        r = api.post("/sessions/FastSim/steps", json=bad)
        assert r.status_code == 400 and word in r.json["message"] and "\n" not in r.json["message"], r.json
    assert api.post("/sessions/NoSuch/steps", json=SIM).status_code == 404
    assert api.delete("/sessions/FastSim/steps/nosuch").status_code == 404


def test_a_request_chooses_steps_and_its_jobs_carry_them_resolved(api, production):
    define(api, SIM, DQ)
    req = production["request"]["id"]
    # the request is valid already: its steps are frozen like every setting that shapes jobs
    r = api.patch(f"/requests/{req}", json={"steps": ["sim", "dq"]})
    assert r.status_code == 409 and r.json["error"] == "request-not-open"
    make_production(api, name="2010_Steps")
    created = api.post("/requests", json={
        "production": "2010_Steps", "parameters": {"Analysis": "Generics", "Generator": "G", "Geometry": "DG_4",
                                                   "Background": "B"},
        "output_lfn": "lfn:/grid/superbvo.org/production/FastSim/2010_Steps/output/steps",
        "output_sites": ["INFN-T1"], "events_per_job": 100,
        "steps": ["sim", {"template": "dq", "parameters": {"min_events": "20"}}, "dq"]})
    assert created.status_code == 201, created.json
    assert created.json["steps"] == [{"template": "sim", "parameters": {}},
                                     {"template": "dq", "parameters": {"min_events": "20"}},
                                     {"template": "dq", "parameters": {}}]
    rid = created.json["id"]
    assert api.patch(f"/requests/{rid}", json={"status": "valid"}).status_code == 200
    job_id = submit(api, {"production": "2010_Steps", "request": created.json}, runs=1)["job_ids"][0]
    desc = api.get(f"/jobs/{job_id}/description").json
    steps = desc["payload"]["steps"]
    assert [(s["name"], s["module"]) for s in steps] == [("sim", "fastsim"), ("dq", "dq"), ("dq-2", "dq")]
    # parameters: the template's defaults, then the request's overrides; the request's job parameters
    # stay the payload's, which the wrapper puts under every step's
    assert "module" not in desc["payload"] and desc["payload"]["parameters"]["Generator"] == "G"
    assert steps[0]["parameters"] == {} and steps[1]["parameters"] == {"min_events": "20"}
    assert steps[2]["parameters"] == {"min_events": "10"} and steps[1]["args"] == ["bin/check-outputs", "--strict"]
    run = parse_job_description(desc).payload.steps_to_run()      # what the wrapper runs
    assert run[0].parameters["Generator"] == "G" and run[1].parameters["min_events"] == "20"
    # a request without steps: today's single module, no `steps` key
    plain = api.get(f"/jobs/{submit(api, production, runs=1)['job_ids'][0]}/description").json
    assert "steps" not in plain["payload"] and plain["payload"]["module"] == "fastsim"


def test_a_chosen_template_cannot_change_or_go_and_unknown_ones_are_refused(api, production):
    define(api, SIM, DQ)
    body = {"production": "2010_July", "parameters": {"Analysis": "Generics", "Generator": "G2",
                                                      "Geometry": "DG_4", "Background": "B"},
            "output_lfn": "lfn:/grid/superbvo.org/production/FastSim/2010_July/output/g2", "output_sites": ["INFN-T1"]}
    r = api.post("/requests", json=dict(body, steps=["sim", "nosuch"]))
    assert r.status_code == 400 and "steps[1]" in r.json["message"] and "nosuch" in r.json["message"]
    r = api.post("/requests", json=dict(body, steps=[{"template": "sim", "params": {}}]))
    assert r.status_code == 400 and "params" in r.json["message"]
    r = api.post("/requests", json=dict(body, steps=["sim", "dq"]))
    assert r.status_code == 201, r.json
    for call in (lambda: api.post("/sessions/FastSim/steps", json=dict(DQ, args=["x"])),
                 lambda: api.delete("/sessions/FastSim/steps/dq")):
        refused = call()
        assert refused.status_code == 409 and refused.json["error"] == "step-in-use", refused.json
        assert f"request {r.json['id']}" in refused.json["message"]
    # while open, the request may drop it; then the template may go
    assert api.patch(f"/requests/{r.json['id']}", json={"steps": ["sim"]}).status_code == 200
    # (its test request, made with the same steps, still chooses dq)
    assert api.patch(f"/requests/{r.json['test_request']}", json={"steps": []}).status_code == 200
    gone = api.delete("/sessions/FastSim/steps/dq")
    assert gone.status_code == 200 and [t["name"] for t in gone.json["steps"]] == ["sim"]


def test_sbk_defines_a_step_and_a_request_chooses_it(api, production, capsys):
    """`sbk session step` and `sbk request create --step`, parsed by sbk's own parser."""
    parser = argparse.ArgumentParser()
    client_commands.add_commands(parser.add_subparsers(dest="command"))
    out, client = Output(), in_process(api)
    cmd_session(client, out, parser.parse_args(
        ["session", "step", "FastSim", "dq", "--module", "dq", "--param", "min_events=5", "--arg", "bin/check"]))
    shown = capsys.readouterr().out
    assert "dq" in shown and "min_events" in shown and "bin/check" in shown
    cmd_request(client, out, parser.parse_args(
        ["request", "create", "--production", "2010_July", "--from", str(production["request"]["id"]),
         "--param", "Analysis=Generics", "--param", "Generator=G3", "--param", "Geometry=DG_4",
         "--param", "Background=B", "--step", "dq",
         "--output-lfn", "lfn:/grid/superbvo.org/production/FastSim/2010_July/output/g3"]))
    rid = int(capsys.readouterr().out.split()[1])
    assert api.get(f"/requests/{rid}").json["steps"] == [{"template": "dq", "parameters": {}}]
    cmd_request(client, out, parser.parse_args(["request", "show", str(rid)]))
    assert "steps" in (shown := capsys.readouterr().out) and " dq" in shown


def test_the_same_new_step_defined_twice_at_once_is_one_template_never_a_500(api, production, monkeypatch):
    """Two managers define the same new step at the same moment: one template, and the second gets
    200 (SQLite serialises the two) or 409 step-defined-meanwhile (PostgreSQL: both read "none"
    first, then the unique index decides), never a 500."""
    import threading
    from server import db, sessions
    from server import models as m
    from server.errors import ApiError
    real, barrier = m.StepTemplate.get_or_none, threading.Barrier(2, timeout=20)

    def both_read_first(*args, **kwargs):
        row = real(*args, **kwargs)
        if not db.is_sqlite():       # SQLite's BEGIN IMMEDIATE lets the second in only after the first
            barrier.wait()
        return row
    monkeypatch.setattr(m.StepTemplate, "get_or_none", both_read_first)
    results = []

    def define():
        with db.connection():
            try:
                results.append(sessions.define_step_template("FastSim", SIM)[1])
            except ApiError as exc:
                results.append((exc.status_code, exc.error))
    threads = [threading.Thread(target=define) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results, key=str) in ([False, True], [(409, "step-defined-meanwhile"), True]), results
    assert [t["name"] for t in api.get("/sessions/FastSim").json["steps"]] == ["sim"]
