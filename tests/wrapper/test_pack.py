"""severus.pyz: one file that runs with nothing but the standard library."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from wrapper.pack import build_pyz

from .test_cli import ROOT, Node
from .test_report import event_server  # noqa: F401

PYTHON3 = "/usr/bin/python3"   # the system interpreter, not the venv


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    return build_pyz(tmp_path_factory.mktemp("pack") / "severus.pyz")


def test_the_archive_holds_packages_site_configs_and_tomli_sources(pyz):
    names = zipfile.ZipFile(pyz).namelist()
    for needed in ("__main__.py", "wrapper/cli.py", "shared/errors.py",
                   "site_configs/__init__.py", "site_configs/INFN-T1.toml", "tomli/_parser.py"):
        assert needed in names
    assert not [n for n in names if n.endswith((".so", ".pyc"))]


def test_pyz_help_runs_isolated(pyz, tmp_path):
    proc = subprocess.run([PYTHON3, "-I", "-S", str(pyz), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "run" in proc.stdout and "pack" in proc.stdout


def test_pyz_runs_a_job_isolated(pyz, tmp_path, event_server):
    node = Node(tmp_path, event_server)
    proc = subprocess.run(node.argv(python=(PYTHON3, "-I", "-S", str(pyz))), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert event_server.finals()[0]["code"] == 0


def test_pyz_finds_the_bundled_site_config(pyz, tmp_path):
    proc = subprocess.run([PYTHON3, "-I", "-S", str(pyz), "check", "--site", "INFN-T1", "--json"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert checks["site config"]["ok"] and "site_configs/INFN-T1.toml" in checks["site config"]["detail"]


def test_pack_command_writes_the_archive(tmp_path):
    out = tmp_path / "s.pyz"
    proc = subprocess.run([sys.executable, "-m", "wrapper", "pack", "-o", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert zipfile.is_zipfile(out)


def test_wrapper_code_is_valid_for_python_3_9():
    vermin = Path(sys.executable).with_name("vermin")
    # tomllib is imported under `except ImportError: import tomli` (bundled in the pyz).
    proc = subprocess.run([str(vermin), "--target=3.9-", "--no-tips", "--violations",
                           "--exclude", "tomllib", "wrapper/", "shared/"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
