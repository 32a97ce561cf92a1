"""Fixtures `grid_pki` (once per session) and `secure_se` (one per test module), registered in
tests/conftest.py. The PKI and the secured XRootD itself are shipped code: server/grid_pki.py,
server/secure_se.py (`sbk demo` runs the same SE)."""
import shutil
import tempfile
from pathlib import Path

import pytest

from server.grid_pki import INSTALL_HINT, make_pki, missing_tools
from server.secure_se import STORE, SecureSE, start_secure_se

__all__ = ["STORE", "SecureSE", "start_secure_se", "private_dir", "grid_pki", "secure_se"]


def private_dir(prefix):
    """A directory of our own under the system's temporary dir. Not pytest's tmp_path: other
    pytest sessions running at the same time prune the numbered pytest-of-<user> directories,
    and a daemon whose grid-mapfile or data dir vanishes fails in odd ways (seen here)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session")
def grid_pki():
    """The test CA, certificates, proxies, token issuer and tokens, made once per session."""
    missing = missing_tools()
    if missing:
        pytest.fail(f"the secured SE needs {', '.join(missing)}: {INSTALL_HINT}")
    base = private_dir("severus-pki-")
    try:
        yield make_pki(base / "pki")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def secure_se(grid_pki):
    """A secured XRootD SE of the test module's own, stopped by PID."""
    base = private_dir("severus-secse-")
    se = start_secure_se(base / "se", grid_pki)
    try:
        yield se
    finally:
        se.stop()
        shutil.rmtree(base, ignore_errors=True)
