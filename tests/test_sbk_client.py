"""The `sbk` managers' client against a real `sbk serve` holding a real production.

The server, its XRootD SE and two finished jobs come from `sbk demo --keep`
(a real `severus run` per job); the client commands then define, submit,
monitor, kill and resubmit more, through the HTTP API only.
"""
import csv
import io
import json
import os
import pty
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from server import cli
from server.client import cli as client_commands
from server.client.library import BadInput
from server.client.submissions import parse_bulk
from server.xrootd_se import free_port

ROOT = Path(__file__).resolve().parent.parent
PARAMS = {"Analysis": "HadRecoilCocktail", "Generator": "B0B0bar_Btag-HD_Cocktail", "Geometry": "DG_4",
          "Background": "MixSuperbBkg_NoPair.tcl"}
OUTPUT = "lfn:/grid/superbvo.org/production/FastSim/2026_Client/output/HadRecoilCocktail/DG_4/Btag"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`sbk demo --keep`: a live server with a session, a release, a site and two done jobs."""
    work = tmp_path_factory.mktemp("client-demo")
    run = subprocess.run([sys.executable, "-m", "server.cli", "demo", "--jobs", "2", "--events", "100",
                          "--keep", "--workdir", str(work)], cwd=ROOT, capture_output=True, text=True,
                         timeout=180)
    found = re.search(r"server (\S+) token (\S+); stop with: kill (\d+)(?: (\d+))?", run.stdout)
    assert run.returncode == 0 and found, run.stdout + run.stderr
    url, token, server_pid, se_pid = found.groups()
    yield {"url": url, "token": token}
    try:
        os.killpg(int(server_pid), signal.SIGTERM)
    except ProcessLookupError:
        pass
    if se_pid:
        try:
            os.kill(int(se_pid), signal.SIGTERM)
        except ProcessLookupError:
            pass


@pytest.fixture()
def sbk(demo, monkeypatch, capsys):
    """Run `sbk ARGS` in this process against the demo server: (exit code, stdout, stderr)."""
    monkeypatch.setenv("SBK_URL", demo["url"])
    monkeypatch.setenv("SBK_TOKEN", demo["token"])

    def run(*args):
        capsys.readouterr()
        try:
            code = cli.main(list(args))
        except SystemExit as exc:   # argparse's own exits
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def sbk_json(sbk, *args):
    code, out, err = sbk(*args, "--json")
    assert code == 0, err
    return json.loads(out)


def sbk_process(*args, env=None, stderr=subprocess.PIPE):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, env=full_env,
                          stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=60)


# ---------------------------------------------------------------------- definitions

def test_me_sessions_software_and_sites_show_the_demo(sbk):
    code, out, _ = sbk("me")
    assert code == 0 and "demo" in out and "expert-submission" in out
    code, out, _ = sbk("session", "list")
    assert code == 0 and re.search(r"FastSim\s+fastsim\s+Analysis,Generator,Geometry,Background\s+V0.2.5 311", out)
    assert sbk_json(sbk, "software", "list", "FastSim")[0]["revision"] == 311
    code, out, _ = sbk("site", "show", "DEMO-T1")
    assert code == 0 and "bunch dimension: 2" in out and re.search(r"2026_Demo\s+yes\s+\S+\s+demo", out)
    sites = sbk_json(sbk, "site", "list")
    assert [s["name"] for s in sites] == ["DEMO-T1"]


def test_session_create_and_param_then_software_add(sbk):
    code, out, _ = sbk("session", "create", "ToySim", "--payload-module", "generic", "--param", "Seed=1,2")
    assert code == 0 and re.search(r"Seed\s+1,2", out)
    code, out, _ = sbk("session", "param", "ToySim", "Mode=fast,slow")
    assert code == 0 and re.search(r"Mode\s+fast,slow", out)
    code, out, _ = sbk("software", "add", "ToySim", "--name", "Toy", "--version", "V1", "--revision", "3",
                       "--lfn", "lfn:/grid/superbvo.org/toy/V1.tgz", "--adler32", "0000abcd",
                       "--workdir", "Toy", "--exe", "bin/toy", "--env", "TOY=1")
    assert code == 0 and "software Toy V1 3 added to ToySim" in out
    assert sbk_json(sbk, "session", "show", "ToySim")["software"][0]["env"] == {"TOY": "1"}
    code, _, err = sbk("session", "create", "ToySim")
    assert code == client_commands.EXIT_REFUSED and "409 duplicate-session" in err


def test_production_and_request_lifecycle(sbk):
    code, out, _ = sbk("production", "create", "2026_Client", "--session", "FastSim", "--version", "V0.2.5",
                       "--note", "client test")
    assert code == 0 and "production 2026_Client created (and 2026_Client_test)" in out
    listed = {p["name"] for p in sbk_json(sbk, "production", "list")}
    assert "2026_Client" in listed and "2026_Client_test" not in listed
    assert "2026_Client_test" in {p["name"] for p in sbk_json(sbk, "production", "list", "--all")}
    args = ["request", "create", "--production", "2026_Client", "--min-runnum", "20000000",
            "--events-per-job", "50", "--input-mode", "NONE", "--output-lfn", OUTPUT, "--output-site", "DEMO-T1",
            "--max-wct", "600", "--note", "from the client"]
    args += [f"--param={k}={v}" for k, v in PARAMS.items()]
    code, out, err = sbk(*args)
    assert code == 0, err
    req_id = int(re.search(r"request (\d+) created on 2026_Client", out).group(1))
    code, _, err = sbk(*args)
    assert code == client_commands.EXIT_REFUSED and "duplicate-request" in err
    shown = sbk_json(sbk, "request", "show", str(req_id))
    assert shown["parameters"] == PARAMS and shown["events_per_job"] == 50 and shown["status"] == "open"
    code, out, _ = sbk("request", "set-status", str(req_id), "valid")
    assert code == 0 and f"request {req_id} is valid" in out
    code, _, err = sbk("request", "set-status", str(req_id), "closed")
    assert code == client_commands.EXIT_REFUSED and "illegal-transition" in err and err.count("\n") == 1
    code, out, _ = sbk("request", "list", "--production", "2026_Client")
    assert code == 0 and re.search(rf"^\s*{req_id}\s+2026_Client\s+valid\s+HadRecoilCocktail", out, re.M)
    # --from imports another request's settings and parameters (a duplicate there is refused).
    code, _, err = sbk("request", "create", "--production", "2026_Client", "--from", str(req_id))
    assert code == client_commands.EXIT_REFUSED and "duplicate-request" in err
    code, out, _ = sbk("production", "close", "2026_Client")
    assert code == 0 and "production 2026_Client closed (and 2026_Client_test)" in out
    assert sbk_json(sbk, "production", "show", "2026_Client_test")["status"] == "closed"
    code, out, _ = sbk("production", "open", "2026_Client")
    assert code == 0 and "production 2026_Client open (and 2026_Client_test)" in out


def test_request_delete_and_the_test_request_directories(sbk):
    source = next(r for r in sbk_json(sbk, "request", "list", "--production", "2026_Client"))
    base = ["request", "create", "--production", "2026_Client", "--from", str(source["id"]),
            *[f"--param={k}={v}" for k, v in dict(PARAMS, Generator="flat").items()],
            "--output-lfn", "lfn:/grid/vo/flat"]
    # a directory without the production's name: the test request's needs a choice
    code, _, err = sbk(*base)
    assert code == client_commands.EXIT_USAGE and "same_output_dirs" in err and err.count("\n") == 1
    code, out, err = sbk(*base, "--same-output-dirs")
    assert code == 0, err
    req_id = int(re.search(r"request (\d+) created", out).group(1))
    shown = sbk_json(sbk, "request", "show", str(req_id))
    assert shown["same_output_dirs"] is True and shown["test_output_lfn"] == "lfn:/grid/vo/flat"
    code, out, _ = sbk("request", "show", str(req_id))
    assert re.search(r"same output dirs:\s+yes", out) and re.search(r"test_output_lfn:\s+lfn:/grid/vo/flat", out)
    code, out, err = sbk("request", "delete", str(req_id))
    assert code == 0 and out == f"request {req_id} deleted (its test request {shown['test_request']})\n", err
    code, _, err = sbk("request", "delete", str(req_id))
    assert code == client_commands.EXIT_REFUSED and "404 not-found" in err
    demo_request = sbk_json(sbk, "request", "list", "--production", "2026_Demo")[0]
    code, _, err = sbk("request", "delete", str(demo_request["id"]))
    assert code == client_commands.EXIT_REFUSED and "409 request-has-jobs" in err and err.count("\n") == 1


def test_site_add_and_set_thresholds_and_switches(sbk):
    code, out, _ = sbk("site", "add", "CLIENT-T2", "--bunch-size", "5", "--description", "a test site")
    assert code == 0 and "bunch dimension: 5" in out
    code, out, _ = sbk("site", "set", "CLIENT-T2", "--threshold-prepared", "30", "--threshold-running", "500",
                       "--threshold-failed", "10", "--disable-session", "FastSim", "--disallow-production",
                       "2026_Demo")
    assert code == 0 and "prepared 30, running 500, failed 10" in out
    assert re.search(r"FastSim\s+no\s+yes", out) and re.search(r"2026_Demo\s+no", out)
    code, _, err = sbk("site", "set", "CLIENT-T2")
    assert code == client_commands.EXIT_USAGE and "nothing to set" in err


# ---------------------------------------------------------------------- submit and the job monitor

def _client_request(sbk):
    return next(r for r in sbk_json(sbk, "request", "list", "--production", "2026_Client"))


def test_submit_dry_run_prints_the_seed_summary_and_writes_nothing(sbk):
    req = _client_request(sbk)
    before = sbk_json(sbk, "jobs", "--production", "2026_Client")["total"]
    code, out, err = sbk("submit", "--production", "2026_Client", "--request", str(req["id"]), "--sites",
                         "DEMO-T1", "--runs", "3", "--events", "50", "--dry-run",
                         "--bulk", f"request={req['id']},sites=DEMO-T1,runs=1,events=1,test,log")
    assert code == 0, err
    assert "would launch 2 set(s) of normal jobs (a total of 4 jobs, 151 events) for the Production 2026_Client" in out
    assert "PRODUCTION DATA - SUMMARY" in out and "Software:          V0.2.5 311" in out
    # Header in the seed's order, then one row per site and a totals line.
    assert re.search(r"Set\s+#Jobs\s+Site\s+First RUNNUM\s+Last RUNNUM\s+#Events\s+Analysis\s+Generator\s+"
                     r"Geometry\s+Background\s+Target Site\(s\)\s+Log in DB", out)
    assert re.search(r"1\s+3\s+DEMO-T1\s+20000000\s+20000002\s+150 \(50 ea\.\)\s+HadRecoilCocktail", out)
    assert re.search(r"2\s+1\s+DEMO-T1\s+20000003\s+20000003\s+1 \(1 ea\.\).*DEMO-T1\s+yes", out)
    assert "2026_Client_test/output" in out
    assert sbk_json(sbk, "jobs", "--production", "2026_Client")["total"] == before


def test_submit_prepares_jobs_quietly_when_piped_with_progress_on_a_terminal(demo):
    env = {"SBK_URL": demo["url"], "SBK_TOKEN": demo["token"]}
    piped = sbk_process("request", "list", "--production", "2026_Client", "--json", env=env)
    req = json.loads(piped.stdout)[0]
    done = sbk_process("submit", "--production", "2026_Client", "--request", str(req["id"]), "--sites",
                       "DEMO-T1", "--runs", "3", "--events", "50", "--json", env=env)
    assert done.returncode == 0 and done.stderr == ""
    plan = json.loads(done.stdout)
    assert len(plan["job_ids"]) == 3 and plan["total_events"] == 150
    leader, follower = pty.openpty()
    try:
        shown = sbk_process("submit", "--production", "2026_Client", "--request", str(req["id"]),
                            "--sites", "DEMO-T1", "--runs", "1", "--events", "50", env=env, stderr=follower)
        os.close(follower)
        progress = os.read(leader, 4096).decode()
    finally:
        os.close(leader)
    assert shown.returncode == 0 and "1 job(s) prepared" in shown.stdout
    assert "» preparing 1 bulk(s), 1 job(s) on 2026_Client" in progress


def test_jobs_filters_columns_and_pagination(sbk):
    code, out, _ = sbk("jobs", "--production", "2026_Demo")
    assert code == 0
    header = out.splitlines()[0].split()
    assert header == ["id", "runnum", "events", "Analysis", "Generator", "Geometry", "Background", "status",
                      "step", "gjid", "site", "wct", "(s)"]
    assert re.search(r"10000000\s+100\s+HadRecoilCocktail\s+B0B0bar_SL\s+DG_4\s+MixSuperbBkg_NoPair.tcl\s+done"
                     r"\s+RUNNING-07\s+-\s+DEMO-T1\s+\d+\.\d\d", out)
    assert "2 jobs found matching the search criteria" in out
    assert sbk_json(sbk, "jobs", "--status", "done", "--site", "DEMO-T1,NOWHERE")["total"] == 2
    assert sbk_json(sbk, "jobs", "--status", "pending", "--production", "2026_Demo")["total"] == 0
    prepared = sbk_json(sbk, "jobs", "--production", "2026_Client", "--status", "prepared", "--sort=-runnum")
    runnums = [j["runnum"] for j in prepared["jobs"]]
    assert len(runnums) >= 4 and runnums == sorted(runnums, reverse=True)
    assert sbk_json(sbk, "jobs", "--runnum-from", "10000001", "--runnum-to", "10000001")["jobs"][0]["runnum"] \
        == 10000001
    assert sbk_json(sbk, "jobs", "-q", "10000000")["total"] == 1
    assert sbk_json(sbk, "jobs", "--last", "1")["total"] == 1
    assert sbk_json(sbk, "jobs", "--user", "demo", "--request", str(prepared["jobs"][0]["request"]),
                    "--prepared-from", "2000-01-01", "--prepared-to", "2999-01-01")["total"] == len(runnums)
    assert sbk_json(sbk, "jobs", "--older-than-hours", "1")["total"] == 0
    assert sbk_json(sbk, "jobs", "--error-code", "0")["total"] == 2
    page = sbk_json(sbk, "jobs", "--per-page", "2", "--page", "2", "--sort", "id")
    assert page["page"] == 2 and len(page["jobs"]) == 2 and page["total"] >= 6
    code, out, _ = sbk("jobs", "--per-page", "2", "--page", "2", "--sort", "id")
    assert "showing 3 to 4, page 2 of" in out
    # the printed cursor continues where the page ended, as page 3 would
    cursor = re.search(r"next page: --after (\S+)", out).group(1)
    after = sbk_json(sbk, "jobs", "--per-page", "2", "--after", cursor, "--sort", "id")
    third = sbk_json(sbk, "jobs", "--per-page", "2", "--page", "3", "--sort", "id")
    assert [j["id"] for j in after["jobs"]] == [j["id"] for j in third["jobs"]] and after["page"] is None


def test_output_csv_and_json_through_the_command_line(sbk):
    code, out, err = sbk("site", "list", "-o", "csv")
    assert code == 0 and out.splitlines()[0] == "site,prepared,running,failed,bunch,se,last submission,description"
    assert ["DEMO-T1", "2"] in [[row[0], row[4]] for row in csv.reader(io.StringIO(out))], out + err   # its bunch
    code, out, _ = sbk("jobs", "--production", "2026_Demo", "--output", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert code == 0 and rows[0][:3] == ["id", "runnum", "events"] and len(rows) == 3
    assert {row[rows[0].index("status")] for row in rows[1:]} == {"done"}
    assert sbk_json(sbk, "jobs", "--production", "2026_Demo") == json.loads(
        sbk("jobs", "--production", "2026_Demo", "--output", "json")[1])


def test_job_shows_history_outputs_transfers_and_log(sbk):
    code, out, err = sbk("job", "1", "--outputs", "--log")
    assert code == 0, err
    assert re.search(r"status:\s+done\n", out)
    assert re.search(r"1\s+11\s+\S+\s+done\s+final\s+RUNNING-07\s+0", out)   # the final event in the history
    outputs = out.split("OUTPUTS")[1].split("TRANSFER ATTEMPTS")[0]
    assert re.search(r"/10000000\.root\s+DEMO-T1\s+root://\S+10000000\.root\.1\s+\d+\s+[0-9a-f]{8}\s+1", outputs)
    transfers = out.split("TRANSFER ATTEMPTS (final report)")[1].split("\nLOG\n")[0]
    assert re.search(r"^out\s+\S+\s+\S+10000000\.root", transfers, re.M)
    log = out.split("\nLOG\n")[1]
    assert "==> severus.log <==" in log and "PacProduction toy: run 10000000, 100 events" in log
    detail = sbk_json(sbk, "job", "1", "--log")
    assert detail["outputs"][0]["adler32"] and "severus.log" in detail["log_text"]


def test_kill_and_resubmit_by_id_and_by_filter(sbk):
    job = sbk_json(sbk, "jobs", "--production", "2026_Client", "--status", "prepared", "--sort", "id")["jobs"][0]
    code, out, _ = sbk("kill", str(job["id"]))
    assert code == 0 and f"job {job['id']}: sys-failed" in out
    code, out, _ = sbk("jobs", "-q", str(job["runnum"]))
    assert re.search(r"sys-failed 062", out)
    code, _, err = sbk("kill", str(job["id"]))
    assert code == client_commands.EXIT_REFUSED and "job-final" in err
    code, out, _ = sbk("resubmit", "--production", "2026_Client", "--status", "sys-failed", "--dry-run")
    assert code == 0 and f"would resubmit 1 job(s): {job['id']}" in out
    code, out, err = sbk("resubmit", str(job["id"]))
    assert code == 0, err
    assert f"job {job['id']}: attempt 2, prepared" in out
    code, _, err = sbk("resubmit", str(job["id"]), "--status", "failed")
    assert code == client_commands.EXIT_USAGE and "not both" in err


def test_stats_and_activities_are_the_home_page(sbk):
    code, out, _ = sbk("stats")
    assert code == 0
    assert re.search(r"FastSim\s+demo\s+\d+\s+\d+\s+\d+\.\d\d", out)
    # Per site and status: the client's 4 prepared (the killed one resubmitted), the demo's 2 done.
    assert re.search(r"prepared\s+submitted\s+running\s+done\s+failed\s+sys-failed\s+timeout\n"
                     r"DEMO-T1\s+4\s+0\s+0\s+2\s+0\s+0\s+0", out)
    stats = sbk_json(sbk, "stats", "--user", "demo")
    assert stats["sessions"][0]["events"] >= 200
    code, out, _ = sbk("activities", "--limit", "3")
    lines = out.strip().splitlines()
    assert code == 0 and lines[0].split()[:4] == ["time", "type", "session", "user"] and len(lines) == 4
    assert "JOBSUBMISSION" in out
    kinds = {a["type"] for a in sbk_json(sbk, "activities", "--limit", "50")}
    assert {"job-submission", "production-created", "request-created"} <= kinds


# ---------------------------------------------------------------------- errors: one line, one exit code

def test_unreachable_server_is_one_line_and_exit_3(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    done = sbk_process("jobs", env={"SBK_URL": dead, "SBK_TOKEN": "sbku_x"})
    assert done.returncode == client_commands.EXIT_UNREACHABLE
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"sbk jobs: cannot reach the server at {dead}")
    assert done.stdout == ""


def test_refused_or_missing_token_is_exit_4(demo):
    done = sbk_process("stats", env={"SBK_URL": demo["url"], "SBK_TOKEN": "sbku_not-a-real-token"})
    assert done.returncode == client_commands.EXIT_AUTH and done.stderr.count("\n") == 1
    assert "refused the token" in done.stderr and "401" in done.stderr
    env = {k: v for k, v in os.environ.items() if k != "SBK_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "server.cli", "stats", "--url", demo["url"]], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == client_commands.EXIT_AUTH and "no API token" in done.stderr


def test_bad_input_is_one_line_and_exit_2(sbk):
    for args, words in ((("jobs", "--status", "finished"), "unknown status 'finished'"),
                        (("jobs", "--last", "x"), "'x' is not a whole number"),
                        (("jobs", "--prepared-from", "yesterday"), "400 bad-request"),
                        (("jobs", "--sort", "colour"), "'sort' must be one of"),
                        (("submit", "--production", "2026_Client", "--bulk", "request=1,runs=2"), "no sites"),
                        (("submit", "--production", "2026_Client", "--request", "1"), "needs --sites"),
                        (("request", "create", "--production", "2026_Client"), "--param NAME=VALUE"),
                        (("production", "frobnicate"), "invalid choice")):
        code, out, err = sbk(*args)
        assert code == client_commands.EXIT_USAGE, (args, err)
        assert err.count("\n") == 1 and words in err, (args, err)


def test_not_found_is_exit_1(sbk):
    code, _, err = sbk("job", "999999")
    assert code == client_commands.EXIT_REFUSED and err.count("\n") == 1 and "404 not-found" in err


def test_settings_come_from_the_config_file(demo, tmp_path):
    config = tmp_path / "xdg" / "sbk" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'url = "{demo["url"]}"\ntoken = "{demo["token"]}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("SBK_URL", "SBK_TOKEN")}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    done = subprocess.run([sys.executable, "-m", "server.cli", "me"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "demo" in done.stdout
    config.write_text('url = "ftp://nowhere"\ntoken = "x"\n')
    done = subprocess.run([sys.executable, "-m", "server.cli", "me"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == client_commands.EXIT_USAGE and "http:// or https://" in done.stderr


def test_parse_bulk_reads_the_compact_form():
    assert parse_bulk("request=7,sites=INFN-T1+INFN-BARI,runs=10,events=80000,log") == {
        "request": 7, "sites": ["INFN-T1", "INFN-BARI"], "runs": 10, "events": 80000, "test": False,
        "log_to_db": True}
    with pytest.raises(BadInput):
        parse_bulk("request=7,sites=A,runs=0,events=1")

