"""The secured SE fixture itself (tests/infra/secure_se.py): what it serves, to whom."""
import shutil
import time

import pytest

from tests.infra.grid_pki import AUDIENCE, ISSUER
from tests.infra.secure_se import private_dir, start_secure_se


def test_xrdcp_with_a_proxy_writes_and_without_one_is_refused_with_exit_52(secure_se, grid_pki, tmp_path):
    src = tmp_path / "f.txt"
    src.write_text("secured\n")
    ok = secure_se.run(["xrdcp", "-f", src, f"{secure_se.root_url}/fixture/with-proxy.txt"], proxy=grid_pki.proxy)
    assert ok.returncode == 0, ok.stderr
    began = time.monotonic()
    refused = secure_se.run(["xrdcp", "-f", src, f"{secure_se.root_url}/fixture/without.txt"])
    assert refused.returncode == 52, refused.stderr
    assert "Auth failed" in refused.stderr
    assert time.monotonic() - began < 5
    assert secure_se.listing("fixture") == ["with-proxy.txt"]
    proc = secure_se.run(["xrdadler32", src])
    assert secure_se.adler32("fixture/with-proxy.txt") == proc.stdout.split()[0]


def test_davs_with_a_token_writes_and_the_voms_proxy_carries_the_vo(secure_se, grid_pki, tmp_path):
    src = tmp_path / "g.txt"
    src.write_text("over https\n")
    ok = secure_se.run(["gfal-copy", "-f", src, f"{secure_se.davs_url}/fixture/token.txt"], token=grid_pki.token)
    assert ok.returncode == 0, ok.stderr
    assert "token.txt" in secure_se.listing("fixture")
    denied = secure_se.run(["gfal-copy", "-f", src, f"{secure_se.davs_url}/fixture/anon.txt"])
    assert denied.returncode != 0 and "403" in denied.stderr
    info = secure_se.run(["voms-proxy-info", "-file", grid_pki.voms_proxy, "-vo"])
    assert info.stdout.strip() == "testvo"
    claims = grid_pki.mint_token(lifetime=60).split(".")[1]
    assert AUDIENCE in _decode(claims) and ISSUER in _decode(claims)


def test_a_read_only_token_reads_but_cannot_write_over_root(secure_se, grid_pki, tmp_path):
    src = tmp_path / "h.txt"
    src.write_text("read me\n")
    assert secure_se.run(["xrdcp", "-f", src, f"{secure_se.root_url}/fixture/ro.txt"],
                         proxy=grid_pki.proxy).returncode == 0
    read = secure_se.run(["xrdcp", "-f", f"{secure_se.root_url}/fixture/ro.txt", tmp_path / "back.txt"],
                         token=grid_pki.token_readonly)
    assert read.returncode == 0, read.stderr
    assert (tmp_path / "back.txt").read_text() == "read me\n"
    write = secure_se.run(["xrdcp", "-f", src, f"{secure_se.root_url}/fixture/ro-write.txt"],
                          token=grid_pki.token_readonly)
    assert write.returncode == 54 and "[3010]" in write.stderr


def test_the_se_stops_by_pid_within_two_seconds(grid_pki):
    base = private_dir("severus-secse-")
    se = start_secure_se(base / "se", grid_pki)
    pid = se.pid
    began = time.monotonic()
    se.stop()
    shutil.rmtree(base)
    assert time.monotonic() - began < 2.5
    assert not se.alive() and se.pid == 0 and pid


def _decode(part):
    import base64
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()


# ---------------------------------------------------------------- a whole job on the secured SE

@pytest.fixture(scope="module")
def sbk(tmp_path_factory):
    """`sbk serve` with the demo's session, release entry and site, for whole jobs."""
    from server import demo as d
    from server.toy_release import build_toy_release
    base = private_dir("severus-secjob-")
    demo = d.Demo(base=base)
    try:
        d.start_server(demo, f"sqlite:///{base / 'sbk.db'}", d.Progress())
        api = d.Api(demo.url, demo.token)
        release = build_toy_release(base)
        d.define_production(api, release, jobs=1, events=50)
        yield {"api": api, "release": release, "demo": demo}
    finally:
        demo.stop()
        shutil.rmtree(base, ignore_errors=True)


def _job_on_the_secured_se(sbk, secure_se, grid_pki, tmp_path, monkeypatch, scheme, cred, require):
    """Release on the SE and in the catalog, a site config, the node's credential; run one job:
    (job id, the finished `severus run`, the SE URL base, the job's area)."""
    from server import demo as d
    from tests.test_end_to_end import prepare_job, run_wrapper
    area = f"job-{scheme}-{cred}"
    base = secure_se.root_url if scheme == "root" else secure_se.davs_url
    release, api = sbk["release"], sbk["api"]
    rel = d.SOFTWARE_LFN[len(f"lfn:{d.LFN_PREFIX}/"):]
    up = secure_se.run(["xrdcp", "-f", "--path", release.path, f"{secure_se.root_url}/{area}/{rel}"],
                       proxy=grid_pki.proxy)
    assert up.returncode == 0, up.stderr
    api.call("POST", "/catalog/replicas", ok=(200, 201, 409), json={
        "lfn": d.SOFTWARE_LFN, "site": d.SITE, "surl": f"{base}/{area}/{rel}", "size": release.size,
        "adler32": release.adler32})
    cfg = tmp_path / "site.toml"
    cfg.write_text(f'name = "{d.SITE}"\n[se]\nlfn_prefix = "{d.LFN_PREFIX}"\nurls = ["{base}/{area}"]\n'
                   f'access = "protocol"\n[scratch]\nmin_free_gb = 0.1\n'
                   f'[credentials]\nrequire = "{require}"\nmin_lifetime_s = 1800\n')
    node = secure_se.client_env(**{None: {}, "proxy": {"proxy": grid_pki.voms_proxy},
                                   "token": {"token": grid_pki.token}}[cred])
    node.pop("BEARER_TOKEN", None)   # the node's token is its file, found by discovery
    for var in ("X509_USER_PROXY", "BEARER_TOKEN", "BEARER_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    for var, value in node.items():
        monkeypatch.setenv(var, value)
    job_id, desc = prepare_job({"api": api, "release": release}, f"SEC_{scheme}_{cred}")
    return job_id, run_wrapper(tmp_path, desc, cfg), base, area


@pytest.mark.timeout(300)
@pytest.mark.parametrize("scheme, cred", [("root", "proxy"), ("davs", "token")])
def test_a_whole_job_runs_on_the_secured_se(sbk, secure_se, grid_pki, tmp_path, monkeypatch, scheme, cred):
    """`severus run` with only the node's credential: software in, payload, outputs and log out."""
    job_id, proc, base, area = _job_on_the_secured_se(sbk, secure_se, grid_pki, tmp_path, monkeypatch, scheme,
                                                      cred, cred)
    api = sbk["api"]
    assert proc.returncode == 0, proc.stderr
    job = api.call("GET", f"/jobs/{job_id}")
    assert job["status"] == "done" and job["error_code"] == 0
    outputs = [o for o in job["outputs"] if o["lfn"].endswith(".root")]
    log = job["report"]["log"]
    assert outputs and log, job["report"]
    for out in outputs + [log]:
        assert out["surl"].startswith(f"{base}/{area}/")
        assert secure_se.adler32(out["surl"][len(f"{base}/"):]) == out["adler32"]   # xrdadler32, user's proxy
    # What the attempt wrote and renamed: no upload name left behind.
    out_dir = outputs[0]["surl"][len(f"{base}/"):].rsplit("/", 1)[0]
    assert not [n for n in secure_se.listing(out_dir) if n.endswith(".severus-upload")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("scheme", ["root", "davs"])
def test_a_whole_job_without_a_credential_is_016_at_once(sbk, secure_se, grid_pki, tmp_path, monkeypatch, scheme):
    """A site that says nothing about credentials, a node without any: the SE refuses the software
    fetch; one line, 016, blame site, no retries (the site allows 2 with backoff), nothing written."""
    began = time.monotonic()
    job_id, proc, base, area = _job_on_the_secured_se(sbk, secure_se, grid_pki, tmp_path, monkeypatch, scheme,
                                                      None, "none")
    assert proc.returncode == 16, proc.stderr
    assert " E016 " in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert time.monotonic() - began < 60
    job = sbk["api"].call("GET", f"/jobs/{job_id}")
    assert job["status"] == "sys-failed" and job["error_code"] == 16
    fetches = [t for t in job["report"]["transfers"] if t["direction"] == "in"]
    assert len(fetches) == 1 and fetches[0]["seconds"] < 3, fetches
    assert secure_se.listing(area) == ["production"]   # only the release we put there
