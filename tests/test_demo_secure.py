"""`sbk demo` on the secured SE (server/secure_se.py, its own CA and VOMS proxy), the open SE it
falls back to, and the Python proxy it makes on machines without grid-proxy-init. What is on
the SE is checked with xrdadler32 holding the demo's proxy, not with our code."""
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from server import demo as d
from server.grid_pki import INSTALL_HINT, USER_DN, demo_missing, make_proxy
from server.xrootd_se import SEStartError

ROOT = Path(__file__).resolve().parent.parent
KEEP_LINE = r"server (\S+) token (\S+); stop with: kill (\d+)(?: (\d+))?"
CATALOG_LINE = re.compile(r"^\s+(\S+)\s+(\d+)\s+([0-9a-f]{8})\s+DEMO-T1\s+(root://\S+)$", re.M)


def run_demo(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "server.cli", "demo", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def client_env(proxy=None, cert_dir=None):
    """A client as a person would be: this proxy and CA dir only, no token, one connection try."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("X509_USER_PROXY", "X509_CERT_DIR", "BEARER_TOKEN", "BEARER_TOKEN_FILE")}
    env.update(XRD_CONNECTIONRETRY="1", XRD_REQUESTTIMEOUT="20", XDG_RUNTIME_DIR="/nonexistent")
    if proxy:
        env["X509_USER_PROXY"] = str(proxy)
    if cert_dir:
        env["X509_CERT_DIR"] = str(cert_dir)
    return env


@pytest.fixture(scope="module")
def secured_demo(tmp_path_factory):
    """`sbk demo --keep` with the secured SE's packages installed: its output and work dir."""
    missing = demo_missing()
    if missing:
        pytest.fail(f"sbk demo's secured SE needs {', '.join(missing)}: {INSTALL_HINT}")
    work = tmp_path_factory.mktemp("secure-demo")
    run = run_demo("--jobs", "3", "--events", "200", "--keep", "--workdir", str(work))
    found = re.search(KEEP_LINE, run.stdout)
    try:
        yield {"run": run, "work": work, "keep": found}
    finally:
        if found:
            try:
                os.killpg(int(found.group(3)), signal.SIGTERM)   # the server leads its process group
            except ProcessLookupError:
                pass
            if found.group(4):
                try:
                    os.kill(int(found.group(4)), signal.SIGTERM)
                except ProcessLookupError:
                    pass


@pytest.mark.timeout(300)
def test_sbk_demo_runs_every_job_on_the_secured_se_with_its_proxy(secured_demo):
    run, work = secured_demo["run"], secured_demo["work"]
    assert run.returncode == 0 and secured_demo["keep"], run.stdout + run.stderr
    assert "storage: secured XRootD SE root://localhost:" in run.stdout
    assert f"jobs hold a VOMS proxy (testvo) of {USER_DN}" in run.stdout
    assert "3/3 jobs done" in run.stdout and "using the open" not in run.stderr
    site = (work / "site_configs" / f"{d.SITE}.toml").read_text()
    assert '[credentials]\nrequire = "proxy"' in site and "davs://localhost:" in site
    proxy, cert_dir = work / "pki" / "vproxy.pem", work / "pki" / "certificates"
    assert f"X509_USER_PROXY={proxy} X509_CERT_DIR={cert_dir}" in run.stdout

    url, token = secured_demo["keep"].group(1), secured_demo["keep"].group(2)
    api = d.Api(url, token)
    jobs = api.call("GET", "/jobs")["jobs"]   # the demo made no others
    assert len(jobs) == 3 and {(j["status"], j["error_code"]) for j in jobs} == {("done", 0)}, jobs

    entries = CATALOG_LINE.findall(run.stdout)
    assert len(entries) == 6, run.stdout   # 3 outputs and 3 logs
    with_proxy = client_env(proxy, cert_dir)
    for name, size, adler32, surl in entries:
        assert surl.startswith("root://localhost:")
        seen = subprocess.run(["xrdadler32", surl], capture_output=True, text=True, timeout=60, env=with_proxy)
        assert seen.returncode == 0 and seen.stdout.split()[0] == adler32, (name, seen.stderr)
    # The SE is the secured one: without a credential it refuses (GSI: "Auth failed", exit 52).
    endpoint, path = re.match(r"(root://[^/]+)/(/.+)", entries[0][3]).groups()
    refused = subprocess.run(["xrdfs", endpoint, "stat", path], capture_output=True, text=True, timeout=60,
                             env=client_env(cert_dir=cert_dir))
    assert refused.returncode == 52 and "Auth failed" in refused.stderr, refused.stdout + refused.stderr
    assert subprocess.run(["xrdfs", endpoint, "stat", path], capture_output=True, text=True, timeout=60,
                          env=with_proxy).returncode == 0


def test_the_demo_proxy_carries_the_vo_and_is_private(secured_demo):
    """The proxy the jobs held: VOMS attributes of testvo (voms-proxy-fake), mode 0600."""
    log = secured_demo["run"].stdout
    assert secured_demo["run"].returncode == 0, log + secured_demo["run"].stderr
    proxy = secured_demo["work"] / "pki" / "vproxy.pem"
    info = subprocess.run(["voms-proxy-info", "-file", proxy, "-vo", "-identity"], capture_output=True,
                          text=True, timeout=30)
    assert info.returncode == 0 and set(info.stdout.splitlines()) == {"testvo", USER_DN}, info.stdout + info.stderr
    assert oct(proxy.stat().st_mode & 0o777) == "0o600"


@pytest.mark.timeout(300)
def test_open_se_flag_runs_the_demo_on_the_open_se():
    run = run_demo("--jobs", "2", "--events", "100", "--open-se")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "storage: open XRootD SE root://127.0.0.1:" in run.stdout and "2/2 jobs done" in run.stdout
    assert "secured" not in run.stdout + run.stderr


@pytest.mark.timeout(300)
@pytest.mark.parametrize("broken", ["packages missing", "SE does not start"])
def test_without_the_secured_se_the_demo_says_why_in_one_line_and_uses_the_open_one(broken, monkeypatch, capsys,
                                                                                   tmp_path):
    # The only stand-in here: what the demo is told about this machine (it has the packages).
    if broken == "packages missing":
        monkeypatch.setattr(d, "demo_missing", lambda: ["xrootd-scitokens-plugins"])
    else:
        def fail(base, pki):
            raise SEStartError("xrootd did not start: a test's refusal")
        monkeypatch.setattr(d, "start_secure_se", fail)
    code = d.main(["--jobs", "1", "--events", "100", "--workdir", str(tmp_path / "work")])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "storage: open XRootD SE root://127.0.0.1:" in out and "1/1 jobs done" in out
    why = [line for line in err.splitlines() if "secured SE" in line]
    expected = ("needs xrootd-scitokens-plugins (scripts/install-deps installs them)" if broken == "packages missing"
                else "did not start: xrootd did not start: a test's refusal")
    assert why == [f"sbk demo: the secured SE {expected}; using the open XRootD SE"], err


@pytest.mark.timeout(300)
def test_without_globus_and_voms_tools_the_demo_makes_its_proxy_in_python(tmp_path):
    """A machine without globus-proxy-utils and voms-clients: the PATH given to `sbk demo` has
    every other command of this one. The jobs then hold a plain proxy made by make_proxy."""
    hidden = {"grid-proxy-init", "voms-proxy-fake", "voms-proxy-info"}
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d_name in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d_name):
            continue
        for name in os.listdir(d_name):
            link = bin_dir / name
            if name not in hidden and not os.path.lexists(link):
                link.symlink_to(os.path.join(d_name, name))
    env = dict(os.environ, PATH=str(bin_dir))
    run = subprocess.run([sys.executable, "-m", "server.cli", "demo", "--jobs", "1", "--events", "100", "--workdir",
                          str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "storage: secured XRootD SE root://localhost:" in run.stdout and "1/1 jobs done" in run.stdout
    assert f"jobs hold a proxy of {USER_DN}" in run.stdout
    pki = tmp_path / "work" / "pki"
    assert not (pki / "vproxy.pem").exists() and (pki / "proxy.pem").exists()


def test_a_proxy_made_in_python_is_accepted_by_the_secured_se(grid_pki, secure_se, tmp_path):
    """make_proxy, the fallback without grid-proxy-init: GSI on root:// and the wrapper's reader take it."""
    from wrapper.credentials import read_proxy
    proxy = make_proxy(grid_pki.usercert, grid_pki.userkey, tmp_path / "py-proxy.pem", 3600)
    assert oct(proxy.stat().st_mode & 0o777) == "0o600"
    info = read_proxy(str(proxy), str(grid_pki.cert_dir))
    assert info.identity == USER_DN and 3000 < info.seconds_left() <= 3600
    src = tmp_path / "f.txt"
    src.write_text("python proxy\n")
    put = secure_se.run(["xrdcp", "-f", src, f"{secure_se.root_url}/demo-secure/py.txt"], proxy=proxy)
    assert put.returncode == 0, put.stderr
    assert secure_se.adler32("demo-secure/py.txt") == secure_se.run(["xrdadler32", src]).stdout.split()[0]
    expired = make_proxy(grid_pki.usercert, grid_pki.userkey, tmp_path / "old.pem", 600, start_offset_s=-3600)
    refused = secure_se.run(["xrdcp", "-f", src, f"{secure_se.root_url}/demo-secure/old.txt"], proxy=expired)
    assert refused.returncode == 52, refused.stderr
