"""Fixtures shared by every test: an isolated environment and a real XRootD SE."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from server.xrootd_se import start_se, xrootd_available  # noqa: E402
from tests.infra.secure_se import grid_pki, secure_se  # noqa: E402,F401  (fixtures)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No test sees the developer's site, cache or server settings."""
    for var in ("SEVERUS_SITE", "SEVERUS_SITE_CONFIGS", "SEVERUS_CACHE", "SBK_URL", "SBK_TOKEN",
                "SBK_DB", "GLIDEIN_Site", "OSG_SITE_NAME", "DIRACSITE", "SITE_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # A server app on PostgreSQL keeps its web key in its data dir, not in the checkout.
    monkeypatch.setenv("SBK_DATA_DIR", str(tmp_path / "sbk-data"))
    # A dead endpoint must fail fast, not after XrdCl's 5 retries (INFRA.md).
    monkeypatch.setenv("XRD_CONNECTIONRETRY", "1")
    monkeypatch.setenv("XRD_REQUESTTIMEOUT", "30")
    # Tests read a job's journal and files after it ended: the wrapper keeps its work dir. Its removal
    # (the default on a node) is tested where this is unset: tests/wrapper/test_workdir.py.
    monkeypatch.setenv("SEVERUS_KEEP_WORKDIR", "1")


@pytest.fixture(scope="session")
def xrootd_se(tmp_path_factory):
    """A real XRootD SE on free loopback ports for the whole session, stopped by PID."""
    if not xrootd_available():
        pytest.fail("xrootd is not installed: run `make test` (it installs xrootd-server)")
    se = start_se(tmp_path_factory.mktemp("xrootd-se"), name="se-main")
    yield se
    se.stop()


@pytest.fixture()
def fresh_se(tmp_path):
    """An SE of the test's own, for tests that stop or break it."""
    se = start_se(tmp_path / "se", name="se-own")
    yield se
    se.stop()
