"""Grid credentials (wrapper/credentials.py) and every transfer stage on the secured SE
(tests/infra/secure_se.py: real XRootD with GSI, tokens, TLS), checked with xrdadler32/xrdfs."""
import json
import re
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from shared.errors import (CredentialError, InputAuthRefused, LogUploadAuthRefused, SoftwareAuthRefused,
                           StageOutAuthRefused)
from tests.infra.grid_pki import ISSUER, USER_DN
import wrapper.inputs
from wrapper import credentials as cr
from wrapper.runner import run_job
from wrapper.siteconfig import parse_site_config
from wrapper.inputs import stage_inputs
from wrapper.joblog import upload_log
from wrapper.software import stage_software
from wrapper.stageout import match_outputs, register_outputs, stage_outputs
from .conftest import LFN_PREFIX, adler32, lfn
from .test_runner import start_job, stages  # noqa: F401  (fixture)
from .test_report import event_server  # noqa: F401  (fixture)
from .test_software import EXE, good_release

CRED_VARS = ("X509_USER_PROXY", "BEARER_TOKEN", "BEARER_TOKEN_FILE", cr.TOKEN_SOURCE_VAR)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def use_cred(monkeypatch, grid_pki, tmp_path):
    """Give this process (and the tools it starts) one credential, as a node's environment would."""
    def use(proxy=None, token=None, token_var=False):
        for var in CRED_VARS:   # set first: monkeypatch records (and restores) only what it saw
            monkeypatch.setenv(var, "")
            monkeypatch.delenv(var)
        monkeypatch.setenv("X509_CERT_DIR", str(grid_pki.cert_dir))
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "no-runtime"))   # no bt_u<uid> of the host
        if proxy is not None:
            monkeypatch.setenv("X509_USER_PROXY", str(proxy))
        if token is not None and token_var:
            monkeypatch.setenv("BEARER_TOKEN", Path(token).read_text().strip())
        elif token is not None:
            monkeypatch.setenv("BEARER_TOKEN_FILE", str(token))
    return use


# ---------------------------------------------------------------- discovery and lifetimes

def test_a_voms_proxy_says_who_and_which_vo_and_how_long(grid_pki, use_cred):
    use_cred(proxy=grid_pki.voms_proxy)
    creds = cr.discover()
    p = creds.proxy
    assert creds.proxy_path == str(grid_pki.voms_proxy)
    assert p.identity == USER_DN and p.subject.startswith(USER_DN + "/CN=")
    assert p.voms_known and p.vo == "testvo" and p.fqans == ("/testvo/Role=NULL/Capability=NULL",)
    assert 11 * 3600 < p.seconds_left() <= 12 * 3600 and 11 * 3600 < p.voms_not_after - time.time()
    plain = cr.read_proxy(str(grid_pki.proxy))
    assert plain.voms_known and plain.vo is None and plain.fqans == ()


def test_each_stage_reads_the_proxy_again_only_when_its_file_changed(grid_pki, use_cred, monkeypatch, tmp_path):
    """Every transfer stage discovers the credentials again (a site agent may renew the proxy meanwhile);
    reading an unchanged file again ran openssl and voms-proxy-info each time (~0.1 s a stage)."""
    import shutil
    proxy = tmp_path / "x509up"
    shutil.copy(grid_pki.voms_proxy, proxy)
    proxy.chmod(0o600)
    use_cred(proxy=proxy)
    calls = []
    real = cr.read_voms
    monkeypatch.setattr(cr, "read_voms", lambda *a, **k: calls.append(a) or real(*a, **k))
    first, again = cr.discover().proxy, cr.discover().proxy
    assert again == first and len(calls) == 1
    shutil.copy(grid_pki.proxy, proxy)            # renewed in place: another proxy, no VOMS attributes
    os.utime(proxy, ns=(time.time_ns(), time.time_ns() + 10**9))
    renewed = cr.discover().proxy
    assert len(calls) == 2 and renewed.vo is None and first.vo == "testvo"


def test_the_proxy_falls_back_to_tmp_x509up_and_a_missing_named_file_is_unset(grid_pki, use_cred, monkeypatch,
                                                                              tmp_path):
    uid = 400000 + os.getpid() % 10000   # a uid of our own: /tmp/x509up_u<uid> is nobody else's
    monkeypatch.setattr(os, "getuid", lambda: uid)
    fallback = Path(f"/tmp/x509up_u{uid}")
    fallback.write_bytes(grid_pki.proxy.read_bytes())
    try:
        use_cred()
        assert cr.discover().proxy_path == str(fallback)
        monkeypatch.setenv("X509_USER_PROXY", str(tmp_path / "gone.pem"))
        fallback.unlink()
        creds = cr.discover()
        assert creds.proxy is None and "does not exist" in creds.proxy_error
        env = cr.tool_environment(creds, dict(os.environ), tmp_path)
        assert "X509_USER_PROXY" not in env   # a variable naming a missing file breaks TLS (xrdcp 51)
    finally:
        fallback.unlink(missing_ok=True)


def test_token_discovery_follows_the_wlcg_order_and_rereads_the_file(grid_pki, use_cred, monkeypatch, tmp_path):
    uid = 410000 + os.getpid() % 10000
    monkeypatch.setattr(os, "getuid", lambda: uid)
    runtime = tmp_path / "run"
    runtime.mkdir()
    tmp_bt = Path(f"/tmp/bt_u{uid}")
    try:
        use_cred()
        tmp_bt.write_text(grid_pki.mint_token(subject="from-tmp") + "\n")
        assert cr.discover().token.subject == "from-tmp"
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        (runtime / f"bt_u{uid}").write_text(grid_pki.mint_token(subject="from-runtime"))
        assert cr.discover().token.subject == "from-runtime"
        agent_file = tmp_path / "agent-token"
        agent_file.write_text(grid_pki.mint_token(subject="from-file", lifetime=600))
        monkeypatch.setenv("BEARER_TOKEN_FILE", str(agent_file))
        first = cr.discover().token
        assert first.subject == "from-file" and first.source == str(agent_file)
        monkeypatch.setenv("BEARER_TOKEN", grid_pki.mint_token(subject="from-var"))
        assert cr.discover().token.subject == "from-var"
        monkeypatch.delenv("BEARER_TOKEN")
        # The wrapper puts the file's token into BEARER_TOKEN for gfal2; a site agent then
        # refreshes the file: the next stage reads the file, not the wrapper's old copy.
        cr.apply_environment(cr.discover(), tmp_path)
        agent_file.write_text(grid_pki.mint_token(subject="from-file", lifetime=7200))
        again = cr.discover().token
        assert again.expires - first.expires > 6000
        assert again.issuer == ISSUER and "storage.create:/" in again.scope.split()
    finally:
        tmp_bt.unlink(missing_ok=True)


def test_xrdcp_gets_a_0600_token_file(grid_pki, use_cred, tmp_path):
    loose = tmp_path / "token-0644"
    loose.write_text(grid_pki.token.read_text())
    loose.chmod(0o644)
    use_cred(token=loose)
    env = cr.tool_environment(cr.discover(), {}, tmp_path)
    copy = Path(env["BEARER_TOKEN_FILE"])
    assert copy.parent == tmp_path and oct(copy.stat().st_mode & 0o777) == "0o600"
    assert copy.read_text().strip() == env["BEARER_TOKEN"] == grid_pki.token.read_text().strip()
    use_cred(token=grid_pki.token)   # already 0600: used where it is
    assert cr.tool_environment(cr.discover(), {}, tmp_path)["BEARER_TOKEN_FILE"] == str(grid_pki.token)


@pytest.mark.parametrize("which, needed, fragment", [
    ("expired_proxy", 60, "(expired)"), ("short_proxy", 2 * 3600, "needs 2h00m"), (None, 60, "no usable proxy")])
def test_a_missing_or_short_proxy_is_005_in_one_line(grid_pki, use_cred, which, needed, fragment):
    use_cred(proxy=getattr(grid_pki, which) if which else None)
    with pytest.raises(CredentialError) as exc:
        cr.check_lifetime(cr.discover(), "proxy", needed, "inputs")
    line = exc.value.one_line()
    assert exc.value.code == 5 and exc.value.entry.blame == "site" and "\n" not in line
    assert line.startswith("E005 ") and fragment in line


def test_any_is_met_by_a_token_when_the_proxy_is_gone_and_the_site_may_lower_the_need(grid_pki, use_cred,
                                                                                      make_site, make_ctx):
    use_cred(token=grid_pki.token)
    cr.check_lifetime(cr.discover(), "any", 1800, "inputs")
    with pytest.raises(CredentialError):
        cr.check_lifetime(cr.discover(), "proxy", 1800, "inputs")
    with pytest.raises(CredentialError, match="the token has"):
        cr.check_lifetime(cr.discover(), "token", 2 * 3600, "inputs")
    ctx = make_ctx(make_site("SITE-A", urls=["root://localhost:1//x"], access="protocol"),
                   limits={"max_wct_s": 36000})
    assert cr.needed_lifetime(ctx.desc, ctx.site, True) == 36000 + ctx.site.transfer.timeout_base_s
    assert cr.needed_lifetime(ctx.desc, ctx.site, False) == ctx.site.transfer.timeout_base_s
    renewed = make_ctx(ctx.site, limits={"max_wct_s": 36000, "credential_lifetime_s": 1200})
    assert cr.needed_lifetime(renewed.desc, renewed.site, True) == 1200          # the job asks for less
    cr.check_lifetime(cr.discover(), "token", cr.needed_lifetime(renewed.desc, renewed.site, True), "inputs")


def test_a_delegated_proxy_too_short_is_006_the_managers(grid_pki, use_cred):
    """The proxy came with the job (the CE's delegation of the submitter's): renewing it is the manager's."""
    use_cred(proxy=grid_pki.short_proxy)
    with pytest.raises(CredentialError) as exc:
        cr.check_lifetime(cr.discover(), "proxy", 2 * 3600, "software", delegated=True)
    assert exc.value.code == 6 and exc.value.entry.blame == "manager"
    assert exc.value.one_line().startswith("E006 ") and "the delegated proxy has" in exc.value.one_line()
    use_cred(token=grid_pki.token)          # a token is never delegated: still the site's
    with pytest.raises(CredentialError) as exc:
        cr.check_lifetime(cr.discover(), "token", 2 * 3600, "software", delegated=True)
    assert exc.value.code == 5


def test_a_ces_fake_certificate_variables_are_not_handed_to_the_tools(grid_pki, use_cred, monkeypatch, tmp_path):
    """A-REX sets X509_USER_CERT=fake and X509_USER_KEY=fake beside the delegated proxy; gfal2 would
    take them before the proxy. Variables naming real files stay."""
    use_cred(proxy=grid_pki.proxy)
    env = cr.tool_environment(cr.discover(), {"X509_USER_CERT": "fake", "X509_USER_KEY": "fake"}, tmp_path)
    assert "X509_USER_CERT" not in env and "X509_USER_KEY" not in env and env["X509_USER_PROXY"] == str(grid_pki.proxy)
    real = {"X509_USER_CERT": str(grid_pki.usercert), "X509_USER_KEY": str(grid_pki.userkey)}
    assert cr.tool_environment(cr.discover(), real, tmp_path)["X509_USER_CERT"] == str(grid_pki.usercert)


def test_an_expired_token_is_005(grid_pki, use_cred):
    use_cred(token=grid_pki.token_expired)
    with pytest.raises(CredentialError, match=r"\(expired\)"):
        cr.check_lifetime(cr.discover(), "token", 60, "outputs")


def test_claims_of_a_token_that_is_not_a_jwt_are_an_error_not_a_crash(use_cred, monkeypatch):
    use_cred()
    monkeypatch.setenv("BEARER_TOKEN", "not-a-token")
    creds = cr.discover()
    assert creds.token is None and "not a JWT" in creds.token_error
    with pytest.raises(CredentialError, match="not a JWT"):
        cr.check_lifetime(creds, "token", 60, "inputs")


# ---------------------------------------------------------------- stages on the secured SE

CREDS = {"proxy": dict(proxy="voms_proxy"), "token": dict(token="token")}


def sec_site(make_site, secure_se, scheme, area, tool="cli", name="SEC", **kw):
    base = secure_se.root_url if scheme == "root" else secure_se.davs_url
    return make_site(name, urls=[f"{base}/{area}"], access="protocol", tool=tool, **kw)


def put(secure_se, grid_pki, tmp_path, rel, data):
    """A file on the secured SE, written by the site's data manager with a proxy."""
    src = tmp_path / f"src-{uuid.uuid4().hex[:6]}"
    src.write_bytes(data)
    proc = secure_se.run(["xrdcp", "-f", src, f"{secure_se.root_url}/{rel}"], proxy=grid_pki.proxy)
    assert proc.returncode == 0, proc.stderr


def give(grid_pki, use_cred, cred):
    use_cred(**{k: getattr(grid_pki, v) for k, v in CREDS[cred].items()})


# gfal2 in this process over root:// with a token is left to test_check_write_test_over_each_door
# and to tests/test_grid_production.py (software, output and log of real jobs), each in a process
# of its own: XrdCl keeps an authenticated channel per host for minutes,
# so here a token test after a proxy test would ride the proxy's login and prove nothing.
@pytest.mark.parametrize("scheme, cred, tool", [
    ("root", "proxy", "cli"), ("root", "token", "cli"), ("davs", "proxy", "cli"), ("davs", "token", "cli"),
    # the token first: davix may keep a TLS session made with the proxy's certificate
    ("davs", "token", "gfal2"), ("root", "proxy", "gfal2"), ("davs", "proxy", "gfal2")])
def test_every_stage_moves_files_with_the_credential(secure_se, grid_pki, use_cred, make_site, make_ctx, catalog,
                                                     tmp_path, scheme, cred, tool):
    area = f"stages-{uuid.uuid4().hex[:8]}"
    site = sec_site(make_site, secure_se, scheme, area, tool=tool)
    release = good_release()
    put(secure_se, grid_pki, tmp_path, f"{area}/sw/app.tgz", release)
    put(secure_se, grid_pki, tmp_path, f"{area}/in/f0.root", b"input 0\n" * 100)
    catalog.add(lfn("sw/app.tgz"), site.name, f"{site.se.urls[0]}/sw/app.tgz", data=release)
    catalog.add(lfn("in/f0.root"), site.name, f"{site.se.urls[0]}/in/f0.root", data=b"input 0\n" * 100)
    give(grid_pki, use_cred, cred)
    ctx = make_ctx(site, software={"lfn": lfn("sw/app.tgz"), "adler32": adler32(release)},
                   input={"mode": "FILE", "paths": [lfn("in/f0.root")]},
                   output={"sites": [site.name], "patterns": ["*.root"]})
    cr.refresh_environment(ctx)
    if tool == "gfal2":
        # A worker node runs one job a process, its credentials in the environment before its first
        # gfal2 context; this test process kept contexts that earlier tests made under other
        # environments (davix reads the CA directory when a context is made): start from none.
        from wrapper.transfer import gfal2 as gfal2_transfer
        gfal2_transfer._FREE_CONTEXTS.clear()

    assert stage_software(ctx, catalog=catalog).exe.read_bytes() == EXE
    (path,) = stage_inputs(ctx, catalog=catalog)
    assert Path(path).read_bytes() == b"input 0\n" * 100
    out = ctx.workdir / "result.root"
    out.write_bytes(b"result\n" * 1000)
    stored = stage_outputs(ctx, [p for p in match_outputs(ctx) if p.name == "result.root"], catalog=catalog)
    register_outputs(ctx, stored, catalog=catalog)
    log = upload_log(ctx, [out], catalog=catalog)
    for item in list(stored) + [log]:
        rel = item.url[len(site.se.urls[0]) + 1:]
        assert secure_se.adler32(f"{area}/{rel}") == item.adler32   # xrdadler32, with a proxy
    assert adler32(b"result\n" * 1000) == stored[0].adler32
    # Nothing left over: the attempt's .severus-upload names were renamed.
    assert not [n for n in secure_se.listing(f"{area}/out/run1") if n.endswith(".severus-upload")]
    if cred == "token":
        assert os.environ["BEARER_TOKEN"] == grid_pki.token.read_text().strip()


REFUSALS = [
    # (case, credential, the stage that is refused)
    ("no credential", {}, "software"),
    ("expired proxy", {"proxy": "expired_proxy"}, "inputs"),
    ("expired token", {"token": "token_expired"}, "outputs"),
    ("read-only token", {"token": "token_readonly"}, "outputs"),
    ("unmapped DN", {"proxy": "unmapped_proxy"}, "log"),
]


@pytest.mark.parametrize("scheme", ["root", "davs"])
@pytest.mark.parametrize("case, cred, stage", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_refused_credential_is_the_families_auth_code_fast_and_leaves_nothing(
        secure_se, grid_pki, use_cred, make_site, make_ctx, catalog, tmp_path, scheme, case, cred, stage):
    area = f"refused-{uuid.uuid4().hex[:8]}"
    # Retries would show as time: three tries with backoff if an auth error were taken for a network one.
    site = sec_site(make_site, secure_se, scheme, area, retries=2, backoff_s=1.0)
    data = b"payload\n" * 100
    put(secure_se, grid_pki, tmp_path, f"{area}/sw/app.tgz", data)
    put(secure_se, grid_pki, tmp_path, f"{area}/in/f0.root", data)
    catalog.add(lfn("sw/app.tgz"), site.name, f"{site.se.urls[0]}/sw/app.tgz", data=data)
    catalog.add(lfn("in/f0.root"), site.name, f"{site.se.urls[0]}/in/f0.root", data=data)
    use_cred(**{k: getattr(grid_pki, v) for k, v in cred.items()})
    ctx = make_ctx(site, software={"lfn": lfn("sw/app.tgz"), "adler32": adler32(data)},
                   input={"mode": "FILE", "paths": [lfn("in/f0.root")]},
                   output={"sites": [site.name], "patterns": ["*.root"]})
    cr.refresh_environment(ctx)
    out = ctx.workdir / "result.root"
    out.write_bytes(b"result\n" * 1000)
    expected = {"software": SoftwareAuthRefused, "inputs": InputAuthRefused, "outputs": StageOutAuthRefused,
                "log": LogUploadAuthRefused}[stage]
    run = {"software": lambda: stage_software(ctx, catalog=catalog),
           "inputs": lambda: stage_inputs(ctx, catalog=catalog),
           "outputs": lambda: stage_outputs(ctx, [out], catalog=catalog),
           "log": lambda: upload_log(ctx, [out], catalog=catalog)}[stage]
    began = time.monotonic()
    with pytest.raises(expected) as exc:
        run()
    assert time.monotonic() - began < 5.0, "an auth failure must not be retried like a network one"
    assert exc.value.code == {"software": 16, "inputs": 23, "outputs": 45, "log": 51}[stage]
    assert exc.value.entry.blame == "site"
    # The report shows the refused transfer, or the access probe the SE refused before any.
    refused_probe = any(v.get("mode") is None and "auth" in v.get("reason", "").lower()
                        for v in ctx.facts.get("access", {}).values())
    assert [t for t in ctx.transfers if t["error"]] or refused_probe
    # Nothing half-written: the directory the stage would write holds nothing new.
    assert not secure_se.listing(f"{area}/out/run1") and not secure_se.listing(f"{area}/out/run1/log")
    assert not list(ctx.workdir.glob("**/*.part"))


def test_the_read_only_token_still_reads(secure_se, grid_pki, use_cred, make_site, make_ctx, catalog, tmp_path):
    area = f"ro-{uuid.uuid4().hex[:8]}"
    site = sec_site(make_site, secure_se, "root", area)
    put(secure_se, grid_pki, tmp_path, f"{area}/in/f0.root", b"x" * 500)
    catalog.add(lfn("in/f0.root"), site.name, f"{site.se.urls[0]}/in/f0.root", data=b"x" * 500)
    use_cred(token=grid_pki.token_readonly)
    ctx = make_ctx(site, input={"mode": "FILE", "paths": [lfn("in/f0.root")]})
    cr.refresh_environment(ctx)
    (path,) = stage_inputs(ctx, catalog=catalog)
    assert Path(path).read_bytes() == b"x" * 500


# ---------------------------------------------------------------- severus check, in its own process

def _check(secure_se, grid_pki, tmp_path, scheme, env_cred, *extra, require="any"):
    base = secure_se.root_url if scheme == "root" else secure_se.davs_url
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'name = "SEC"\n[se]\nlfn_prefix = "{LFN_PREFIX}"\nurls = ["{base}/check"]\n'
                   f'access = "protocol"\n[scratch]\nmin_free_gb = 0\n[credentials]\nrequire = "{require}"\n')
    env = secure_se.client_env(**env_cred)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "wrapper", "check", "--site-config", str(cfg), "--workdir",
                           str(tmp_path), "--write-test", *extra], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)


@pytest.mark.parametrize("scheme", ["root", "davs"])
@pytest.mark.parametrize("cred", ["proxy", "token"])
def test_check_write_test_over_each_door(secure_se, grid_pki, tmp_path, scheme, cred):
    token = tmp_path / "bt"
    token.write_text(grid_pki.mint_token(lifetime=2 * 3600))
    token.chmod(0o600)
    env_cred = {"proxy": grid_pki.voms_proxy} if cred == "proxy" else {"token": token}
    proc = _check(secure_se, grid_pki, tmp_path, scheme, env_cred, "--json")
    results = {r["name"]: r for r in json.loads(proc.stdout)["checks"]}
    assert results["se round trip"]["state"] == "OK", results
    assert "write, stat, adler32" in results["se round trip"]["reason"]
    who = results["credentials"]
    if cred == "proxy":
        assert USER_DN in who["reason"] and "VO testvo (/testvo/Role=NULL/Capability=NULL)" in who["reason"]
        assert 11 * 3600 < who["perf"]["proxy_lifetime"] <= 12 * 3600 and "voms_lifetime" in who["perf"]
    else:
        assert f"iss {ISSUER}" in who["reason"] and "sub testuser" in who["reason"]
        assert "storage.modify:/" in who["reason"] and 7000 < who["perf"]["token_lifetime"] <= 7200
    # 12 h of proxy, 2 h of token: under a day is WARNING, and the check still passes.
    assert who["state"] == "WARNING" and proc.returncode == 0, proc.stdout
    assert not secure_se.listing("check/.severus-check")


def test_check_nagios_is_critical_for_a_missing_credential_and_carries_lifetimes(secure_se, grid_pki, tmp_path):
    proc = _check(secure_se, grid_pki, tmp_path, "root", {}, "--nagios")
    assert proc.returncode == 2 and proc.stdout.startswith("SEVERUS CRITICAL")
    assert "credentials CRITICAL: the site requires a grid credential (any): no grid credential" in proc.stdout
    short = _check(secure_se, grid_pki, tmp_path, "davs", {"proxy": grid_pki.short_proxy}, "--nagios")
    assert short.stdout.startswith("SEVERUS CRITICAL") and "proxy_lifetime=" in short.stdout
    lifetime = float(short.stdout.split("proxy_lifetime=")[1].split("s;")[0])
    assert 3000 < lifetime <= 3600
    assert " proxy_lifetime=" in short.stdout and ";86400;3600;0" in short.stdout


# ---------------------------------------------------------------- the runner's check before each stage

def _require(ctx, tmp_path, **credentials):
    ctx.site = parse_site_config({"name": "TEST-SITE", "credentials": credentials,
                                  "se": {"lfn_prefix": "/grid/superbvo.org", "local_path": str(tmp_path)},
                                  "scratch": {"min_free_gb": 0}})


def _run(ctx, reporter, stop):
    try:
        return run_job(ctx, reporter, stop, watch_overrides={"sample_s": 0.1})
    finally:
        stop.close()


def test_a_proxy_too_short_for_the_job_is_005_before_any_transfer(tmp_path, event_server, stages, use_cred,
                                                                  grid_pki):
    use_cred(proxy=grid_pki.short_proxy)   # 1 h left; the job may run 2 h, then stage out
    ctx, reporter, stop = start_job(tmp_path, event_server, limits={"max_wct_s": 7200})
    _require(ctx, tmp_path, require="proxy")
    outcome = _run(ctx, reporter, stop)
    assert (outcome.code, outcome.status) == (5, "sys-failed")
    assert stages.calls == ["upload_log"]   # no software, input or output transfer was tried
    report = event_server.finals()[0]["report"]
    assert report["failed_step"] == "RUNNING-02" and report["blame"] == "site"
    assert outcome.message.startswith("E005 ") and "\n" not in outcome.message
    assert re.search(r"the proxy has 0h[0-5]\dm left", outcome.message), outcome.message   # made at session start
    assert "software needs 2h05m" in outcome.message


def test_the_site_may_ask_for_less_and_a_token_serves_for_any(tmp_path, event_server, stages, use_cred, grid_pki):
    use_cred(token=grid_pki.token)
    ctx, reporter, stop = start_job(tmp_path, event_server, limits={"max_wct_s": 7200})
    _require(ctx, tmp_path, require="any", min_lifetime_s=600)
    outcome = _run(ctx, reporter, stop)
    assert (outcome.code, outcome.status) == (0, "done"), outcome.message
    assert stages.calls[:3] == ["stage_software", "stage_inputs", "stage_outputs"]


def test_a_token_that_expires_before_stage_out_is_005_at_outputs(tmp_path, event_server, stages, use_cred,
                                                                 grid_pki, monkeypatch):
    bt = tmp_path / "bt"
    bt.write_text(grid_pki.mint_token(lifetime=3600))
    bt.chmod(0o600)
    use_cred(token=bt)
    ctx, reporter, stop = start_job(tmp_path, event_server, limits={"max_wct_s": 60})
    _require(ctx, tmp_path, require="token")
    real = stages.stage_inputs

    def inputs_then_the_agent_writes_a_dying_token(ctx_):
        bt.write_text(grid_pki.mint_token(lifetime=30))   # the next stage must read it again
        return real(ctx_)
    monkeypatch.setattr(wrapper.inputs, "stage_inputs", inputs_then_the_agent_writes_a_dying_token)
    outcome = _run(ctx, reporter, stop)
    assert outcome.code == 5 and "outputs needs" in outcome.message
    assert event_server.finals()[0]["report"]["failed_step"] == "RUNNING-05"
    assert "stage_outputs" not in stages.calls and stages.calls[-1] == "upload_log"


@pytest.mark.parametrize("message, code", [
    ("Run: [FATAL] Auth failed: No protocols left to try (destination)", None),                   # xrdcp 52
    ("[ERROR] Server responded with an error: [3010] Unable to create /store/x; permission denied", None),  # 54
    ("DESTINATION OVERWRITE   HTTP 403 : Permission refused", 1),                                 # davs, GError 1
    ("TRANSFER ERROR: Copy failed (streamed). Last attempt: HTTP 403 : Permission refused", 17),
    ("Could not read status line: SSL error: sslv3 alert certificate expired after 1 attempts", 112),
    ("[FATAL] TLS error: Unable to use cert+key file /gone.pem; does not exist.", None),          # xrdcp 51
])
def test_what_the_tools_say_when_the_se_refuses_us_is_auth(message, code):
    from wrapper.transfer import classify_error
    assert classify_error(message, code) == "auth"
    assert classify_error("Result (Neon): Could not send request: Connection reset by peer", 112) == "failed"


@pytest.mark.parametrize("table, fragment", [({"require": "x509"}, "'credentials.require' must be one of"),
                                             ({"min_lifetime_s": -1}, "'credentials.min_lifetime_s' must be"),
                                             ({"lifetime": 1}, "unknown key 'credentials.lifetime'"),
                                             ({"cert_dir": "certs"}, "'credentials.cert_dir' must be")])
def test_a_bad_credentials_table_is_002_in_one_line(table, fragment):
    from shared.errors import SiteConfigError
    with pytest.raises(SiteConfigError, match=fragment) as exc:
        parse_site_config({"name": "S", "se": {"lfn_prefix": "/grid/x", "urls": ["root://h//x"]},
                           "credentials": table})
    assert exc.value.code == 2 and "\n" not in exc.value.one_line()


def test_the_sites_cert_dir_fills_a_bare_environment_and_the_nodes_own_wins(monkeypatch, tmp_path):
    """A CE's job environment is often bare: the site names where its nodes keep the CA certificates."""
    from wrapper.credentials import use_site_cert_dir
    site = parse_site_config({"name": "S", "se": {"lfn_prefix": "/grid/x", "urls": ["root://h//x"]},
                              "credentials": {"require": "proxy", "cert_dir": str(tmp_path)}})
    monkeypatch.setenv("X509_CERT_DIR", "")      # recorded first: the undo then removes what the code sets
    monkeypatch.delenv("X509_CERT_DIR")
    use_site_cert_dir(site)
    assert os.environ["X509_CERT_DIR"] == str(tmp_path)
    monkeypatch.setenv("X509_CERT_DIR", "/etc/grid-security/certificates")
    use_site_cert_dir(site)
    assert os.environ["X509_CERT_DIR"] == "/etc/grid-security/certificates"


@pytest.mark.parametrize("table, fragment", [({"delegate": "yes"}, "'ce.delegate' must be true or false"),
                                             ({"runtime_environments": "ENV/PROXY"}, "'ce.runtime_environments'"),
                                             ({"runtime_environments": ["ENV PROXY"]}, "'ce.runtime_environments'")])
def test_a_bad_ce_table_is_002_and_delegation_is_the_default(table, fragment):
    from shared.errors import SiteConfigError
    base = {"name": "S", "se": {"lfn_prefix": "/grid/x", "urls": ["root://h//x"]}}
    with pytest.raises(SiteConfigError, match=fragment) as exc:
        parse_site_config(dict(base, ce=dict(url="https://ce.example.org/arex", **table)))
    assert exc.value.code == 2 and "\n" not in exc.value.one_line()
    ce = parse_site_config(dict(base, ce={"url": "https://ce.example.org/arex"})).ce
    assert ce.delegate is True and ce.runtime_environments == ()


def test_a_proxy_file_without_its_key_is_named_unusable(grid_pki, use_cred, tmp_path):
    """An ARC CE's job proxy file when nothing was delegated: the submitter's certificates alone."""
    chain = tmp_path / "job.proxy"
    chain.write_text(_certs_only(grid_pki.proxy.read_text()))
    use_cred(proxy=chain)
    creds = cr.discover()
    assert creds.proxy is None and "no private key" in creds.proxy_error
    assert "X509_USER_PROXY" not in cr.tool_environment(creds, {}, tmp_path)
    with pytest.raises(CredentialError, match="no private key"):
        cr.check_lifetime(creds, "proxy", 60, "inputs")


def _certs_only(pem):
    return "".join(re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", pem, re.S))
