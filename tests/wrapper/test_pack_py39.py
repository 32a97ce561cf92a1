"""The oldest promised Python (setup.py): the wrapper on a real CPython 3.9 (EL9's), the server not.

severus.pyz from a plain `pip install .` under Python 3.11 runs under 3.9; a plain `pip install .`
under 3.9 gives a working `severus` (TOML site configs through tomli) and an `sbk` that says in one
line it needs 3.11, without the server's requirements. The interpreter is named by
$SEVERUS_TEST_PYTHON39, or found on PATH (python3.9), in pyenv's versions ($PYENV_ROOT, `pyenv
root`, ~/.pyenv) or uv's Pythons; without one these tests are skipped, saying how to get one.
"""
import glob
import json
import os
import pwd
import shutil
import subprocess
import zipfile

import pytest

from .test_cli import ROOT, Node
from .test_report import event_server  # noqa: F401

PACKAGES = ("shared", "wrapper", "server", "site_configs")
INSTALL_HINT = ("no CPython 3.9 on this machine: `uv python install 3.9`, `pyenv install 3.9`, or set "
                "SEVERUS_TEST_PYTHON39 to a python3.9")


def find_python39():
    """A CPython 3.9 interpreter's path, or None."""
    home = pwd.getpwuid(os.getuid()).pw_dir      # $HOME is the test's own (tests/conftest.py)
    candidates = [os.environ.get("SEVERUS_TEST_PYTHON39"), shutil.which("python3.9"), "/usr/bin/python3.9",
                  "/usr/local/bin/python3.9"]
    pyenv_roots = [os.environ.get("PYENV_ROOT"), f"{home}/.pyenv"]
    if shutil.which("pyenv"):
        pyenv_roots.append(subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30).stdout.strip())
    for root in filter(None, pyenv_roots):
        candidates += sorted(glob.glob(f"{root}/versions/3.9*/bin/python3.9"), reverse=True)
    for root in filter(None, [os.environ.get("UV_PYTHON_INSTALL_DIR"), f"{home}/.local/share/uv/python"]):
        candidates += sorted(glob.glob(f"{root}/cpython-3.9*/bin/python3.9"), reverse=True)
    for path in filter(None, candidates):
        try:
            out = subprocess.run([path, "-I", "-c", "import sys; print(sys.implementation.name, *sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30).stdout.split()
        except OSError:
            continue
        if out == ["cpython", "3", "9"]:
            return path
    return None


@pytest.fixture(scope="module")
def python39():
    path = find_python39()
    if path is None:
        pytest.skip(INSTALL_HINT)
    return path


def plain_install(base, python):
    """A fresh venv of `python` (no system site packages) with a plain `pip install .` of a copy of the tree."""
    src = base / "src"
    for name in PACKAGES:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "setup.py", src / "setup.py")
    venv = base / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    proc = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A plain install under Python 3.11."""
    venv = plain_install(tmp_path_factory.mktemp("plain-install"), "/usr/bin/python3")
    assert subprocess.run([venv / "bin" / "python", "-c", "import sys; assert sys.version_info >= (3, 11)"]).returncode == 0
    return venv


@pytest.fixture(scope="module")
def installed_39(python39, tmp_path_factory):
    """A plain install under Python 3.9."""
    return plain_install(tmp_path_factory.mktemp("plain-install-39"), python39)


@pytest.fixture(scope="module")
def pyz(installed, tmp_path_factory):
    out = tmp_path_factory.mktemp("pyz") / "severus.pyz"
    proc = subprocess.run([str(installed / "bin" / "severus"), "pack", "-o", str(out)], cwd=tmp_path_factory.getbasetemp(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


def test_pack_works_from_a_plain_pip_install_under_3_11(pyz):
    names = zipfile.ZipFile(pyz).namelist()
    assert {"__main__.py", "wrapper/cli.py", "tomli/__init__.py", "tomli/_parser.py"} <= set(names)
    # the wrapper's subpackages too (setup.py's find_packages names them: "wrapper.*")
    assert {"wrapper/transfer/__init__.py", "wrapper/transfer/gfal2.py"} <= set(names)
    assert not [n for n in names if n.endswith((".so", ".pyc"))]   # tomli's compiled twins stay behind


def test_the_pyz_runs_under_a_real_python_3_9(pyz, python39, tmp_path):
    proc = subprocess.run([python39, "-I", "-S", str(pyz), "--version"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("severus ")


def test_the_pyz_reads_a_bundled_site_config_with_tomli_under_3_9(pyz, python39, tmp_path):
    hidden = subprocess.run([python39, "-I", "-S", "-c", "import tomllib"], capture_output=True, timeout=30)
    assert hidden.returncode != 0          # the premise: 3.9 has no tomllib, the bundled tomli reads TOML
    proc = subprocess.run([python39, "-I", "-S", str(pyz), "check", "--site", "INFN-T1", "--json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["site config"]["ok"], checks["site config"]
    assert checks["python"]["detail"].startswith("3.9"), checks["python"]


def test_the_pyz_runs_a_job_under_3_9(pyz, python39, tmp_path, event_server):
    node = Node(tmp_path, event_server, limits={"max_wct_s": 60, "cores": 2})
    proc = subprocess.run(node.argv(python=(python39, "-I", "-S", str(pyz))), cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    final = event_server.finals()[0]
    assert final["code"] == 0 and final["report"]["metrics"]["events"] == 50
    assert (node.se / "production/FastSim/out/10000003.root.1").is_file()



def test_a_plain_install_under_3_9_runs_the_wrapper_without_the_servers_requirements(installed_39, tmp_path):
    pip = subprocess.run([installed_39 / "bin" / "python", "-m", "pip", "list", "--format=json"], capture_output=True,
                         text=True, timeout=120)
    names = {p["name"].lower() for p in json.loads(pip.stdout)}
    assert {"severus", "tomli"} <= names and not names & {"flask", "peewee", "gunicorn", "psycopg2-binary"}, names
    proc = subprocess.run([installed_39 / "bin" / "severus", "check", "--site", "INFN-T1", "--json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["site config"]["ok"] and checks["python"]["detail"].startswith("3.9"), checks


def test_sbk_under_3_9_says_in_one_line_that_it_needs_3_11(installed_39, tmp_path):
    proc = subprocess.run([installed_39 / "bin" / "sbk", "serve"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and proc.stdout == "", proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sbk needs Python >= 3.11 (this is 3.9."), proc.stderr
