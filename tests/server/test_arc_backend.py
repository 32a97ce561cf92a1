"""The `arc` backend against a real ARC CE (A-REX 6, LRMS fork) started by tests/infra/arc_ce.py.

The jobs run a stand-in severus.pyz (a zipapp that prints what it was given and
exits as its description asks): this tests the backend's submission, sandbox,
states, kill and clean, not the wrapper (tests/test_arc_production.py runs the
real one through the CE into Slurm).
"""
import json
import os
import re
import subprocess
import time
import zipapp
from pathlib import Path

import pytest

from server.backends import ArcBackend, BackendError, BackendUnavailable, Bunch, JobSpec, create_backend
from server.backends.arc import job_xrsl, resources
from server.backends.delegation import Credential, load_credential, sign_request
from tests.infra.arc_ce import USER_DN, arc_ce_fork  # noqa: F401 (session fixture)

pytestmark = pytest.mark.timeout(180)

FAKE_MAIN = '''
import json, os, ssl, sys, time
args = sys.argv[1:]
desc = json.load(open(args[1]))
test = desc["test"]
proxy = os.environ.get("X509_USER_PROXY")
cert = ssl._ssl._test_decode_cert(proxy) if proxy and os.path.isfile(proxy) else None
dn = lambda rdns: "".join("/" + {"domainComponent": "DC", "organizationName": "O", "commonName": "CN"}.get(k, k)
                          + "=" + v for rdn in rdns for k, v in rdn)
print(json.dumps({"args": args, "uid": os.getuid(), "cwd": os.getcwd(), "job": desc["job"]["id"],
                  "site_config": open(args[args.index("--site-config") + 1]).read(),
                  "credential": os.environ.get("SEVERUS_CREDENTIAL"),
                  "proxy": cert and {"subject": dn(cert["subject"]), "issuer": dn(cert["issuer"])}}), flush=True)
time.sleep(test.get("sleep", 0))
sys.exit(test.get("exit", 0))
'''


@pytest.fixture(scope="module")
def fake_pyz(tmp_path_factory):
    src = tmp_path_factory.mktemp("fakepyz")
    (src / "app").mkdir()
    (src / "app" / "__main__.py").write_text(FAKE_MAIN)
    out = src / "severus.pyz"
    zipapp.create_archive(src / "app", out)
    return out


def site_toml(ce, queue="fork", extra=""):
    return (f'name = "ARC-SITE"\n[se]\nlfn_prefix = "/grid/test"\nurls = ["root://localhost:1094//data"]\n'
            f'[ce]\nurl = "{ce.url}"\nqueue = "{queue}"\n{extra}')


def make_bunch(tmp_path, ce, specs, first_id=1, limits=None, site_extra=""):
    jobs = tuple(JobSpec(job_id=first_id + i, runnum=100 + first_id + i,
                         description={"schema": 1, "job": {"id": first_id + i}, "test": spec,
                                      "limits": dict(limits or {"max_wct_s": 60})})
                 for i, spec in enumerate(specs))
    return Bunch(site="ARC-SITE", jobs=jobs, site_config=site_toml(ce, extra=site_extra),
                 workdir=str(tmp_path / "sandboxes"))


def backend_for(ce, wrapper, **kw):
    return ArcBackend(wrapper=str(wrapper), cert=str(ce.cert), key=str(ce.key), ca=str(ce.ca_dir), **kw)


def wait_states(backend, gjids, done, timeout=90.0):
    deadline = time.monotonic() + timeout
    while True:
        states = backend.status(gjids)
        if all(done(s) for s in states.values()):
            return states
        if time.monotonic() > deadline:
            pytest.fail(f"states not reached in {timeout}s: {states}")
        time.sleep(0.5)


def session_file(ce, gjid, name):
    reply = ce.session().get(f"{ce.url}/rest/1.0/jobs/{gjid.split('#')[1]}/session/{name}", timeout=10)
    return reply.status_code, reply.text


def make_proxy_file(ce, path):
    made = subprocess.run(["grid-proxy-init", "-rfc", "-cert", str(ce.cert), "-key", str(ce.key),
                           "-certdir", str(ce.ca_dir), "-out", str(path)], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, RANDFILE=str(path.parent / ".rnd")))
    assert made.returncode == 0, made.stderr
    return path


def bunch_xrsl(bunch):
    """What the backend POSTed for a bunch (kept in its sandbox); one bunch per workdir."""
    (path,) = Path(bunch.workdir).glob("*/bunch.xrsl")
    return path.read_text()


def test_resources_and_xrsl_follow_the_job_description():
    req = resources({"limits": {"cores": 4, "max_rss_mb": 2000, "max_wct_s": 3600}})
    assert req["count"] == 4 and req["memory"] == 500 and req["walltime"] > 3600   # memory per core
    assert "memory" not in resources({"limits": {"max_wct_s": 60}})
    text = job_xrsl(1, "S", 7, {"limits": {"cores": 4, "max_rss_mb": 2000, "max_wct_s": 3600}}, "q", "python3", 99)
    for part in ('(count="4")', '(memory="500")', f'(walltime="{req["walltime"]} seconds")', '(queue="q")',
                 '("severus.pyz" "")("job-1.json" "")("site.toml" "")', '(outputfiles=("job.out" ""))'):
        assert part in text


def test_registry_and_clear_refusals(tmp_path, arc_ce_fork, fake_pyz):  # noqa: F811
    ce = arc_ce_fork
    with pytest.raises(BackendError, match="no client credential"):
        create_backend("arc")
    backend = backend_for(ce, fake_pyz)
    bunch = make_bunch(tmp_path, ce, [{}])
    with pytest.raises(BackendError, match=r"names no CE.*\[ce\] url"):
        backend.submit(Bunch(site="X", jobs=bunch.jobs, workdir=bunch.workdir,
                             site_config='name = "X"\n[se]\nlfn_prefix = "/g"\nurls = ["root://h//g"]\n'))
    dead = Bunch(site="X", jobs=bunch.jobs, workdir=bunch.workdir,
                 site_config=site_toml(ce).replace(str(ce.port), "1"))
    with pytest.raises(BackendUnavailable, match="cannot be reached"):
        backend.submit(dead)
    with pytest.raises(BackendError, match="not an ARC gjid"):
        backend.status(["12345_0"])


def test_bunch_runs_each_job_with_its_sandbox_then_is_cleaned(tmp_path, arc_ce_fork, fake_pyz):  # noqa: F811
    ce = arc_ce_fork
    backend = backend_for(ce, fake_pyz)
    bunch = make_bunch(tmp_path, ce, [{"exit": 0}, {"exit": 3}],
                       limits={"cores": 1, "max_rss_mb": 300, "max_wct_s": 120})
    gjids = backend.submit(bunch)
    assert sorted(gjids) == [1, 2] and all(g.startswith(ce.url + "#") for g in gjids.values())
    states = wait_states(backend, list(gjids.values()), lambda s: s.final)
    ok, bad = states[gjids[1]], states[gjids[2]]
    assert (ok.state, ok.exit_code) == ("completed", 0), ok
    assert (bad.state, bad.exit_code) == ("failed", 3) and "exit code" in bad.reason, bad

    # what the job got: its own description, the site config, run as the mapped grid user
    code, text = session_file(ce, gjids[2], "job.out")
    assert code == 200, text
    seen = json.loads(text.splitlines()[0])
    assert seen["job"] == 2 and seen["args"][:2] == ["run", "job-1.json"] and seen["uid"] != 0
    # by default the job holds the CE's delegation of the server's credential (here a robot
    # certificate: the proxy is signed by it), and is told so
    assert seen["credential"] == "delegated" and seen["proxy"]["issuer"] == USER_DN, seen
    assert seen["proxy"]["subject"].startswith(USER_DN + "/CN="), seen
    assert f'url = "{ce.url}"' in seen["site_config"]
    # only the declared output is kept: the uploaded sandbox is gone from the session
    listing = ce.session().get(f"{ce.url}/rest/1.0/jobs/{gjids[2].split('#')[1]}/session/", timeout=10).text
    assert "job.out" in listing and "severus.pyz" not in listing
    # the CE was asked for what the description asks: its own record of the job
    local = ce.session().get(f"{ce.url}/rest/1.0/jobs/{gjids[1].split('#')[1]}/diagnose/local", timeout=10).text
    assert "jobname=severus-ARC-SITE-1" in local and "queue=fork" in local

    backend.clean(gjids.values())
    gone = wait_states(backend, list(gjids.values()), lambda s: s.state == "unknown", timeout=30)
    assert all("knows no job" in s.reason for s in gone.values())


def test_sweep_cleans_jobs_finished_for_clean_after_s(tmp_path, arc_ce_fork, fake_pyz):  # noqa: F811
    ce = arc_ce_fork
    backend = backend_for(ce, fake_pyz, clean_after_s=0.0)
    gjids = list(backend.submit(make_bunch(tmp_path, ce, [{}], first_id=10)).values())
    wait_states(backend, gjids, lambda s: s.final)
    # the sweep (every status call when clean_after_s is 0) cleans it once A-REX says FINISHED
    wait_states(backend, gjids, lambda s: s.state == "unknown", timeout=30)


def test_kill_ends_the_job_cancelled(tmp_path, arc_ce_fork, fake_pyz):  # noqa: F811
    ce = arc_ce_fork
    backend = backend_for(ce, fake_pyz)
    gjids = list(backend.submit(make_bunch(tmp_path, ce, [{"sleep": 600}], first_id=20)).values())
    wait_states(backend, gjids, lambda s: s.state == "running" and s.reason == "ARC INLRMS", timeout=60)
    backend.cancel(gjids)
    state = wait_states(backend, gjids, lambda s: s.final)[gjids[0]]
    assert state.state == "cancelled" and "cancel" in state.reason.lower() and state.exit_code is None, state
    backend.cancel(gjids)   # a job already ended: left alone, no error
    backend.clean(gjids)


def test_finished_state_reads_the_failed_and_diag_files():
    from server.backends.arc import finished_state
    ok = finished_state("", "walltime=3\nexitcode=0\n")
    assert (ok.state, ok.reason, ok.exit_code) == ("completed", "ARC FINISHED", 0)
    wrong = finished_state("LRMS error: (3) Job finished with wrong exit code - 3 != 0\n", "exitcode=3\n")
    assert (wrong.state, wrong.exit_code) == ("failed", 3)
    # no exitcode line (the job script was cut short): the code in the failed text
    assert finished_state("LRMS error: (13) Job failed\n", "nodename=vm\n").exit_code == 13
    cancelled = finished_state("Job is canceled by external request\n", "exitcode=0\n")
    assert (cancelled.state, cancelled.exit_code) == ("cancelled", None)
    assert finished_state("LRMS error: (-1) Job exceeded time limit", "").state == "timeout"
    assert finished_state("LRMS error: (-1) Job was killed: memory limit exceeded", "").state == "out_of_memory"


def test_a_proxy_is_a_credential_and_a_stranger_is_refused(tmp_path, arc_ce_fork):  # noqa: F811
    """The server may hold a proxy (cert = key = the proxy file); a certificate the CE does not map gets nothing."""
    ce = arc_ce_fork
    proxy = tmp_path / "proxy.pem"
    made = subprocess.run(["grid-proxy-init", "-rfc", "-cert", str(ce.cert), "-key", str(ce.key),
                           "-certdir", str(ce.ca_dir), "-out", str(proxy)], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, RANDFILE=str(tmp_path / ".rnd")))
    assert made.returncode == 0, made.stderr
    backend = ArcBackend(cert=str(proxy), ca=str(ce.ca_dir))
    assert backend.status([f"{ce.url}#abcdef123"])[f"{ce.url}#abcdef123"].state == "unknown"   # a 404, authenticated
    # the CE's host certificate is signed by the same CA but is no mapped user
    host = ArcBackend(cert=str(ce.base / "certs" / "host-localhost-cert.pem"),
                      key=str(ce.base / "certs" / "host-localhost-key.pem"), ca=str(ce.ca_dir))
    with pytest.raises(BackendError, match="HTTP 403|TLS"):
        host.status([f"{ce.url}#abcdef123"])
    # a CA that did not sign the CE: refused before anything is sent
    other = ArcBackend(cert=str(proxy), ca="/usr/share/ca-certificates")
    with pytest.raises(BackendUnavailable, match="TLS with the CE"):
        other.status([f"{ce.url}#abcdef123"])


def test_jobs_hold_a_delegation_renewed_when_the_servers_proxy_is(tmp_path, arc_ce_fork, fake_pyz):  # noqa: F811
    """The server holds a proxy; each CE gets one delegation of it, which jobs name. A renewed proxy
    file (grid-proxy-init again) renews that delegation: later jobs hold a proxy signed by the new one."""
    ce = arc_ce_fork
    proxy = make_proxy_file(ce, tmp_path / "proxy.pem")
    backend = ArcBackend(wrapper=str(fake_pyz), cert=str(proxy), ca=str(ce.ca_dir))
    rte = 'runtime_environments = ["ENV/PROXY"]\n'
    first = make_bunch(tmp_path / "one", ce, [{}], first_id=30, site_extra=rte)
    gjid_one = backend.submit(first)[30]
    make_proxy_file(ce, proxy)                                   # the manager's proxy, renewed
    renewed_subject = load_credential(str(proxy)).cert.subject.rfc4514_string()
    second = make_bunch(tmp_path / "two", ce, [{}], first_id=31, site_extra=rte)
    gjid_two = backend.submit(second)[31]
    (one_id,) = re.findall(r'\(delegationid="(\w+)"\)', bunch_xrsl(first))
    assert re.findall(r'\(delegationid="(\w+)"\)', bunch_xrsl(second)) == [one_id]     # renewed, not new
    for text in (bunch_xrsl(first), bunch_xrsl(second)):
        assert '(runtimeenvironment="ENV/PROXY")' in text and '("SEVERUS_CREDENTIAL" "delegated")' in text

    wait_states(backend, [gjid_one, gjid_two], lambda s: s.final)
    seen = json.loads(session_file(ce, gjid_two, "job.out")[1].splitlines()[0])
    assert seen["credential"] == "delegated" and seen["proxy"]["subject"].startswith(USER_DN + "/CN="), seen
    # the job's proxy is signed by the renewed one: its issuer is that proxy's subject
    issuer_cn = seen["proxy"]["issuer"].rsplit("/CN=", 1)[1]
    assert renewed_subject.startswith(f"CN={issuer_cn},"), (renewed_subject, seen["proxy"])

    # The manager renews the proxy again while jobs wait: the poller's next status read renews the
    # delegation (the CE gives the new proxy to the jobs naming it), with no submission needed.
    make_proxy_file(ce, proxy)
    backend.status([gjid_two])
    held = ce.session().post(f"{ce.url}/rest/1.0/delegations/{one_id}", params={"action": "get"}, timeout=10)
    assert held.status_code == 200, held.text
    assert load_credential(str(proxy)).cert.subject in _chain_subjects(held.text)   # signed by the newest

    # A CE that lost the delegation (its store wiped) would run a job naming it without a proxy:
    # the backend asks before each reuse, and delegates anew.
    backend.clean([gjid_one, gjid_two])
    wait_states(backend, [gjid_one, gjid_two], lambda s: s.state == "unknown", timeout=30)
    gone = ce.session().post(f"{ce.url}/rest/1.0/delegations/{one_id}", params={"action": "delete"}, timeout=10)
    assert gone.status_code in (200, 202), (gone.status_code, gone.text)
    third = make_bunch(tmp_path / "three", ce, [{}], first_id=32, site_extra=rte)
    backend.submit(third)
    (three_id,) = re.findall(r'\(delegationid="(\w+)"\)', bunch_xrsl(third))
    known = ce.session().post(f"{ce.url}/rest/1.0/delegations/{three_id}", params={"action": "get"}, timeout=10)
    assert three_id != one_id and known.status_code == 200 and "BEGIN CERTIFICATE" in known.text


def test_no_delegation_when_the_site_says_so(tmp_path, arc_ce_fork, fake_pyz):  # noqa: F811
    ce = arc_ce_fork
    backend = backend_for(ce, fake_pyz)
    bunch = make_bunch(tmp_path, ce, [{}], first_id=40, site_extra="delegate = false\n")
    gjid = backend.submit(bunch)[40]
    assert "delegationid" not in bunch_xrsl(bunch) and "SEVERUS_CREDENTIAL" not in bunch_xrsl(bunch)
    wait_states(backend, [gjid], lambda s: s.final)
    seen = json.loads(session_file(ce, gjid, "job.out")[1].splitlines()[0])
    assert seen["credential"] is None, seen


def test_signing_a_request_refuses_what_is_not_one(tmp_path, arc_ce_fork):  # noqa: F811
    """A garbled request is one clear BackendError; a good one becomes our proxy + our chain, for
    the request's key, never outliving our credential."""
    ce = arc_ce_fork
    robot = load_credential(str(ce.cert), str(ce.key))
    with pytest.raises(BackendError, match="not a valid self-signed request"):
        sign_request("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", robot)
    subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=x",
                    "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "r.pem")],
                   check=True, capture_output=True, timeout=60)
    short = Credential(robot.cert, robot.key, robot.chain, time.time() + 600, robot.fingerprint)
    pem = sign_request((tmp_path / "r.pem").read_text(), short, lifetime_s=86400)
    (tmp_path / "chain.pem").write_bytes(pem)
    delegated = load_credential(str(tmp_path / "chain.pem"), str(tmp_path / "k.pem"))
    assert delegated.chain[0].subject == robot.cert.subject and delegated.cert.issuer == robot.cert.subject
    assert delegated.not_after <= short.not_after + 1
    verify = subprocess.run(["openssl", "verify", "-allow_proxy_certs", "-CApath", str(ce.ca_dir), "-untrusted",
                             str(ce.cert), str(tmp_path / "chain.pem")], capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0, verify.stdout + verify.stderr



def _chain_subjects(pem):
    from cryptography import x509
    blocks = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", pem, re.S)
    return [x509.load_pem_x509_certificate(b.encode()).subject for b in blocks]
