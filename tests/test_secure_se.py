"""The secured SE fixture itself (tests/infra/secure_se.py): what it serves, to whom."""
import shutil
import time

from tests.infra.grid_pki import AUDIENCE, ISSUER


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
    from tests.infra.secure_se import private_dir, start_secure_se
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
