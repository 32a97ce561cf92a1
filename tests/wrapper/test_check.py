"""`severus check` as a site admin runs it: a real XRootD SE up then down, a direct-mode site, a real sbk."""
import email.utils
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from server.demo import Api, Demo, Progress, sbk_command, start_server
from wrapper import check

from .conftest import PROBE_FILE, closed_port, mark_se

ROOT = Path(__file__).resolve().parents[2]
NAGIOS_RE = re.compile(r"^SEVERUS (OK|WARNING|CRITICAL|UNKNOWN) - [^|\n]+ \| "
                       r"([A-Za-z0-9_]+=-?[\d.]+(s|MB)?(;[\d.-]*){0,3} ?)+$")


def severus_check(*args, env=None):
    return subprocess.run([sys.executable, "-m", "wrapper", "check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def write_site(path, name, urls=(), local_path=None, access="auto", min_free_gb=0.0, probe_file=None):
    lines = [f'name = "{name}"', "[se]", 'lfn_prefix = "/grid/test.vo"',
             "urls = [" + ", ".join(f'"{u}"' for u in urls) + "]", f'access = "{access}"']
    if local_path:
        lines.append(f'local_path = "{local_path}"')
    if probe_file:
        lines.append(f'probe_file = "{probe_file}"')
    lines += ["[scratch]", f"min_free_gb = {min_free_gb}", "[transfer]", "probe_timeout_s = 5.0"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def sbk_server(tmp_path_factory):
    """A real `sbk serve` on SQLite; `token` is a Developer's (every privilege)."""
    base = tmp_path_factory.mktemp("check-sbk")
    demo = Demo(base=base)
    start_server(demo, f"sqlite:///{base / 'sbk.db'}", Progress())
    yield demo
    demo.stop()


def test_xrootd_se_up_is_ok_then_down_is_critical(fresh_se, tmp_path, sbk_server):
    site = write_site(tmp_path / "XRD-SITE.toml", "XRD-SITE", urls=[fresh_se.root_url], access="protocol")
    up = severus_check("--site-config", str(site), "--write-test", "--server", sbk_server.url, "--json",
                       "--workdir", str(tmp_path))
    assert up.returncode == 0, up.stdout + up.stderr
    result = json.loads(up.stdout)
    states = {c["name"]: c for c in result["checks"]}
    assert result["state"] == "OK" and result["site"] == "XRD-SITE"
    assert list(states) == ["python", "modules", "site config", "fallback sites", "scratch", "credentials", "access",
                           "se round trip", "server"]
    assert states["access"]["reason"].startswith("protocol for write") and fresh_se.root_url in states["access"]["reason"]
    trip = states["se round trip"]["reason"]
    assert re.match(r"protocol write, stat, adler32 [0-9a-f]{8}, read, delete of \d+ B", trip)
    assert all(c["seconds"] >= 0 for c in result["checks"]) and states["se round trip"]["perf"]["se_round_trip"] > 0
    assert abs(states["server"]["perf"]["clock_offset"]) < 2
    leftovers = list((fresh_se.export / ".severus-check").glob("*"))
    assert leftovers == []   # the test file was deleted on the SE
    nagios = severus_check("--site-config", str(site), "--write-test", "--nagios", "--workdir", str(tmp_path))
    assert nagios.returncode == 0 and nagios.stdout.count("\n") == 1
    assert NAGIOS_RE.match(nagios.stdout.strip()), nagios.stdout
    assert nagios.stdout.startswith("SEVERUS OK - XRD-SITE: 8 checks OK, access protocol |")

    fresh_se.stop()
    down = severus_check("--site-config", str(site), "--write-test", "--nagios", "--workdir", str(tmp_path))
    assert down.returncode == 2, down.stdout + down.stderr
    line = down.stdout.strip()
    assert NAGIOS_RE.match(line), line
    assert line.startswith("SEVERUS CRITICAL - XRD-SITE: access CRITICAL: XRD-SITE: no usable SE access")
    assert "se round trip UNKNOWN: not tested" in line
    plain = severus_check("--site-config", str(site), "--workdir", str(tmp_path))
    assert plain.returncode == 4
    assert re.search(r"^CRITICAL access\s+\d+\.\d+ s  XRD-SITE: no usable SE access for read", plain.stdout, re.M)


def test_direct_mode_site_round_trip(tmp_path):
    export = tmp_path / "mount"
    export.mkdir()
    mark_se(export)   # a directory under /tmp: the probe file says it is the SE
    site = write_site(tmp_path / "DIRECT-SITE.toml", "DIRECT-SITE", local_path=str(export), access="direct",
                      probe_file=PROBE_FILE)
    done = severus_check("--site-config", str(site), "--write-test", "--workdir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"^OK\s+site config\s+\S+ s  DIRECT-SITE from .*local_path {export}, probe_file {PROBE_FILE}\)",
                     done.stdout, re.M)
    assert re.search(rf"^OK\s+access\s+\S+ s  direct for write via posix: {export} is mounted "
                     rf"\(probe file {PROBE_FILE} found", done.stdout, re.M)
    assert re.search(r"^OK\s+se round trip\s+\S+ s  direct write, stat, adler32 [0-9a-f]{8}, read, delete",
                     done.stdout, re.M)
    assert list((export / ".severus-check").iterdir()) == []


def test_an_empty_mount_point_is_shown_with_its_reason(xrootd_se, tmp_path, on_root_fs):
    """GPFS missing on this node: auto goes through the URL and says why; direct is CRITICAL and says why."""
    why = f"{on_root_fs} is not on a mounted file system (its mount point is /)"
    auto = write_site(tmp_path / "AUTO.toml", "AUTO", urls=[xrootd_se.root_url], local_path=str(on_root_fs))
    done = severus_check("--site-config", str(auto), "--workdir", str(tmp_path), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    access = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "access")
    assert access["state"] == "OK" and access["reason"].startswith("protocol for read via ")
    assert access["reason"].endswith(f"{xrootd_se.root_url} answered a stat (direct: {why})")
    direct = write_site(tmp_path / "DIRECT.toml", "DIRECT", urls=[xrootd_se.root_url], local_path=str(on_root_fs),
                        access="direct")
    done = severus_check("--site-config", str(direct), "--workdir", str(tmp_path))
    assert done.returncode == 4, done.stdout + done.stderr
    assert re.search(rf"^CRITICAL access\s+\S+ s  DIRECT: access is direct but {re.escape(why)}$", done.stdout, re.M)
    assert os.listdir(on_root_fs) == []


def test_scratch_below_the_site_minimum_is_critical_003(tmp_path):
    export = tmp_path / "mount"
    export.mkdir()
    mark_se(export)
    site = write_site(tmp_path / "FULL.toml", "FULL", local_path=str(export), access="direct", min_free_gb=1e5,
                      probe_file=PROBE_FILE)
    done = severus_check("--site-config", str(site), "--workdir", str(tmp_path), "--json")
    assert done.returncode == 3
    scratch = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "scratch")
    assert scratch["state"] == "CRITICAL" and "site minimum 100000 GB" in scratch["reason"]


def test_a_fallback_site_without_its_configuration_is_a_bad_site_config_002(tmp_path):
    export = tmp_path / "mount"
    export.mkdir()
    mark_se(export)
    site = write_site(tmp_path / "MAIN.toml", "MAIN", local_path=str(export), access="direct", probe_file=PROBE_FILE)
    site.write_text(site.read_text() + '[stageout]\nfallback_sites = ["GHOST-SITE"]\n')
    done = severus_check("--site-config", str(site), "--workdir", str(tmp_path), "--json")
    assert done.returncode == 2, done.stdout + done.stderr
    result = json.loads(done.stdout)
    bad = [c for c in result["checks"] if c["state"] != "OK"]
    assert [(c["state"], c["code"]) for c in bad] == [("CRITICAL", 2)], bad
    assert bad[0]["reason"].startswith("E002 ") and "GHOST-SITE" in bad[0]["reason"]
    assert result["site"] == "MAIN"          # the site itself loaded: a --report still names it
    # Its configuration beside the site's own: the node is fine.
    write_site(tmp_path / "GHOST-SITE.toml", "GHOST-SITE", local_path=str(export), access="direct")
    done = severus_check("--site-config", str(site), "--workdir", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^OK\s+fallback sites\s+\S+ s  GHOST-SITE$", done.stdout, re.M), done.stdout


def test_bad_site_config_and_unreachable_server(tmp_path):
    bad = tmp_path / "BAD.toml"
    bad.write_text('name = "BAD"\n[se]\nlfn_prefix = 3\n')
    dead = f"http://127.0.0.1:{closed_port()}"
    done = severus_check("--site-config", str(bad), "--server", dead, "--nagios", "--report",
                         env={"SBK_TOKEN": "sbku_unused"})
    assert done.returncode == 2
    line = done.stdout.strip()
    assert NAGIOS_RE.match(line) and "site config CRITICAL: E002" in line and "access UNKNOWN" in line
    assert f"server CRITICAL: {dead}/api/v1/health" in line
    # --report without a site to report for: one line on stderr, and a CRITICAL "report" in the output.
    assert done.stderr == ("severus check: --report: not sent: no site name (the site configuration did not load; "
                           "pass --site)\n")
    assert "report CRITICAL: not sent: no site name" in line


def test_report_keeps_the_check_on_the_server_as_the_sites_last(xrootd_se, tmp_path, sbk_server):
    """A real `severus check --report` over a real XRootD SE to a real `sbk serve`; then what it refuses."""
    api = Api(sbk_server.url, sbk_server.token)
    api.call("POST", "/sites", json={"name": "XRD-REPORT"})
    site = write_site(tmp_path / "XRD-REPORT.toml", "XRD-REPORT", urls=[xrootd_se.root_url], access="protocol")
    admin = {"SBK_URL": sbk_server.url, "SBK_TOKEN": sbk_server.token}
    done = severus_check("--site-config", str(site), "--write-test", "--json", "--report", "--workdir",
                         str(tmp_path), env=admin)
    assert done.returncode == 0 and done.stderr == "", done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["state"] == "OK" and result["node"] == socket.gethostname()
    sent = result["checks"][-1]
    assert sent["name"] == "report" and sent["state"] == "OK", sent

    last = api.call("GET", "/sites/XRD-REPORT")["last_check"]
    assert sent["reason"] == f"kept by {sbk_server.url} as check {last['id']} of XRD-REPORT"
    assert last["status"] == "OK" and last["node"] == socket.gethostname() and last["reported_by"] == "demo"
    assert [c["name"] for c in last["checks"]] == ["python", "modules", "site config", "fallback sites", "scratch",
                                                   "credentials", "access", "se round trip", "server"]
    kept = {c["name"]: c for c in last["checks"]}
    assert re.match(r"protocol write, stat, adler32 [0-9a-f]{8}, read, delete", kept["se round trip"]["reason"])
    assert [(c["name"], c["state"], c["reason"]) for c in last["checks"]] == \
        [(c["name"], c["state"], c["reason"]) for c in result["checks"][:-1]]
    assert api.call("GET", "/sites/XRD-REPORT/checks")["history"][0]["id"] == last["id"]

    # Refused (a monitoring-only token, an unknown site) and unreachable: one line, the check's own output.
    viewer = subprocess.run(sbk_command() + ["user", "add", "viewer", "--groups", "webui"], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "SBK_DB": f"sqlite:///{sbk_server.base / 'sbk.db'}"})
    assert viewer.returncode == 0, viewer.stderr
    refused = severus_check("--site-config", str(site), "--report", "--workdir", str(tmp_path),
                            env=dict(admin, SBK_TOKEN=viewer.stdout.strip().splitlines()[-1]))
    assert refused.returncode == 4
    assert refused.stderr == (f"severus check: --report: refused by {sbk_server.url}: HTTP 403 forbidden: "
                              "this needs the privilege expert-submission\n")
    assert re.search(r"^CRITICAL report\s+\S+ s  refused by ", refused.stdout, re.M)
    (tmp_path / "mount").mkdir()
    mark_se(tmp_path / "mount")
    nowhere = write_site(tmp_path / "NOWHERE.toml", "NOWHERE", local_path=str(tmp_path / "mount"), access="direct",
                         probe_file=PROBE_FILE)
    unknown = severus_check("--site-config", str(nowhere), "--report", "--nagios", "--workdir", str(tmp_path),
                            env=admin)
    assert unknown.returncode == 2 and unknown.stderr.endswith("HTTP 404 not-found: site 'NOWHERE' does not exist\n")
    assert unknown.stdout.startswith("SEVERUS CRITICAL - NOWHERE: report CRITICAL: refused by ")
    dead = f"http://127.0.0.1:{closed_port()}"
    gone = severus_check("--site-config", str(site), "--report", "--workdir", str(tmp_path),
                         env=dict(admin, SBK_URL=dead))
    assert gone.returncode == 4 and gone.stderr.count("\n") == 1
    assert gone.stderr.startswith(f"severus check: --report: not sent: server unreachable: {dead}/api/v1/sites/")
    assert api.call("GET", "/sites/XRD-REPORT")["last_check"]["id"] == last["id"]   # none of those was kept


class _SkewedClock(BaseHTTPRequestHandler):
    skew_s = 0.0

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def date_time_string(self, timestamp=None):
        return email.utils.formatdate(time.time() + self.skew_s, usegmt=True)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("skew, state", [(0, "OK"), (120, "WARNING"), (-600, "CRITICAL")])
def test_clock_offset_thresholds(skew, state):
    handler = type("Skewed", (_SkewedClock,), {"skew_s": skew})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        options = check.CheckOptions(site_config="/nonexistent.toml",
                                     server=f"http://127.0.0.1:{server.server_port}")
        result = next(r for r in check.run_checks(options) if r.name == "server")
    finally:
        server.shutdown()
        server.server_close()
    assert result.state == state, result.reason
    offset = dict((p.label, p.value) for p in result.perf)["clock_offset"]
    assert abs(offset - skew) < 2


def test_nagios_line_and_exit_codes_follow_the_worst_state():
    def results(*states):
        return [check.CheckResult(f"c{n}", s, f"reason {n}", 0.01, 4 if s in ("CRITICAL", "UNKNOWN") else 0)
                for n, s in enumerate(states)]

    for states, code in ((("OK", "OK"), 0), (("OK", "WARNING"), 1), (("WARNING", "UNKNOWN"), 3),
                         (("UNKNOWN", "CRITICAL", "WARNING"), 2)):
        got = results(*states)
        assert check.nagios_exit(got) == code
        line = check.nagios_line(got, "SITE")
        assert NAGIOS_RE.match(line) and line.startswith(f"SEVERUS {check.overall_state(got)} - SITE: ")
    line = check.nagios_line([check.CheckResult("x", "WARNING", "a | b\nc", 0.5, 0,
                                                (check.Perf("free", 12, "MB", 20, 10, 0),))])
    assert line == "SEVERUS WARNING - x WARNING: a / b c | free=12MB;20;10;0 x_time=0.5s"
    assert check.exit_code(results("OK", "WARNING")) == 0 and check.exit_code(results("OK", "CRITICAL")) == 4
