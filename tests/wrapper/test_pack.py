"""severus.pyz: one file that runs with nothing but the standard library."""
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from wrapper.pack import build_pyz

from .conftest import adler32
from .test_cli import ROOT, SW_LFN, Node
from .test_report import event_server  # noqa: F401

PYTHON3 = "/usr/bin/python3"   # the system interpreter, not the venv


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    return build_pyz(tmp_path_factory.mktemp("pack") / "severus.pyz")


def test_the_archive_holds_packages_site_configs_and_tomli_sources(pyz):
    names = zipfile.ZipFile(pyz).namelist()
    for needed in ("__main__.py", "wrapper/cli.py", "wrapper/transfer/__init__.py", "shared/errors.py",
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


def test_pyz_runs_a_job_in_protocol_mode_through_xrdcp_without_gfal2(pyz, tmp_path, area, event_server):
    """No gfal2 (`-I -S` drops the dist-packages it lives in): the software comes down and the
    outputs and log go up over root:// with xrdcp, verified, and the report says so."""
    hidden = subprocess.run([PYTHON3, "-I", "-S", "-c", "import gfal2"], capture_output=True, timeout=30)
    assert hidden.returncode != 0   # the premise: this interpreter cannot import the bindings
    node = Node(tmp_path, event_server)
    sw_rel = "production/FastSim/test_release/V0.2.5_rev311.tjz"
    area.put(sw_rel, (node.se / sw_rel).read_bytes())
    sw = event_server.catalog[SW_LFN]
    sw["replicas"] = [{"site": "TEST-SITE", "surl": f"{area.url('root')}/{sw_rel}"}]
    node.site_config.write_text(
        'name = "TEST-SITE"\n[se]\nlfn_prefix = "/grid/superbvo.org"\n'
        f'urls = ["{area.url("root")}"]\naccess = "protocol"\n[scratch]\nmin_free_gb = 0\n')
    proc = subprocess.run(node.argv(python=(PYTHON3, "-I", "-S", str(pyz))), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = event_server.finals()[0]["report"]
    assert report["code"] == 0
    transfers = report["transfers"]
    assert {t["direction"] for t in transfers} == {"in", "out"}
    assert {t["tool"] for t in transfers} == {"xrdcp"}
    assert all(t["error"] is None for t in transfers)
    assert any(t["source"] == sw["replicas"][0]["surl"] for t in transfers)
    out = event_server.catalog["lfn:/grid/superbvo.org/production/FastSim/out/10000003.root"]
    assert out["replicas"][0]["surl"].startswith("root://")
    on_se = area.path / "production/FastSim/out/10000003.root.1"   # the attempt in the name
    assert adler32(on_se.read_bytes()) == out["adler32"]
    assert not (node.se / "production/FastSim/out").exists()   # nothing went the direct way


# ---------------------------------------------------------------------- a site's own payload modules

SITE_MODULE = '''\
"""A site's payload module: writes the step's Label into <runnum>.root (no software of its own needed)."""
from wrapper.modules import PayloadModule


class LabelSim(PayloadModule):
    name = "labelsim"
    required_parameters = ("Label",)

    def argv(self, job):
        return ("sh", "-c", 'printf %s "$1" > "$2.root"', "labelsim", job.step.parameters["Label"],
                str(job.desc.job.runnum))
'''


def pack_with(tmp_path, *modules):
    return subprocess.run([sys.executable, "-m", "wrapper", "pack", "-o", str(tmp_path / "site.pyz"),
                           *[a for m in modules for a in ("--module", str(m))]],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_a_module_packed_with_the_pyz_runs_a_job_and_is_checked_before_any_transfer(tmp_path, event_server):
    module = tmp_path / "labelsim.py"
    module.write_text(SITE_MODULE)
    packed = pack_with(tmp_path, module)
    assert packed.returncode == 0, packed.stderr
    pyz = tmp_path / "site.pyz"
    assert "severus_site_modules/labelsim.py" in zipfile.ZipFile(pyz).namelist()
    python = (PYTHON3, "-I", "-S", str(pyz))

    node = Node(tmp_path / "good", event_server,
                payload={"module": "labelsim", "parameters": {"Label": "written by a site module"}})
    proc = subprocess.run(node.argv(python=python), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert event_server.finals()[0]["report"]["payload"]["module"] == "labelsim"
    on_se = node.se / "production/FastSim/out/10000003.root.1"
    assert on_se.read_text() == "written by a site module"

    # Its required parameter missing: 001 at the node checks, before the software comes down.
    node = Node(tmp_path / "bad", event_server, payload={"module": "labelsim", "parameters": {}})
    proc = subprocess.run(node.argv(python=python), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "E001" in proc.stderr and "labelsim needs parameter(s) Label" in proc.stderr
    assert not (node.workdir / "software").exists()
    # A module the pyz does not hold: the refusal lists the packed one among those it knows.
    node = Node(tmp_path / "unknown", event_server, payload={"module": "nosuchsim", "parameters": {}})
    proc = subprocess.run(node.argv(python=python), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "unknown payload module 'nosuchsim'" in proc.stderr, proc.stderr
    assert "labelsim" in proc.stderr.split("known:")[1]


@pytest.mark.parametrize("source, words", [
    ("def broken(:\n", "cannot be imported: SyntaxError"),
    ("import no_such_module_here\n", "cannot be imported: ModuleNotFoundError"),
    ("X = 1\n", "defines no payload module (a subclass of wrapper.modules.PayloadModule with a name)"),
    (SITE_MODULE.replace('"labelsim"', '"fastsim"'), "'fastsim' is a built-in payload module"),
])
def test_a_bad_module_file_is_refused_by_pack_in_one_line(tmp_path, source, words):
    module = tmp_path / "sitemod.py"
    module.write_text(source)
    proc = pack_with(tmp_path, module)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("E002 ") and str(module) in line and words in line, line
    assert not (tmp_path / "site.pyz").exists()


def test_pack_refuses_a_missing_file_and_two_modules_of_one_name(tmp_path):
    proc = pack_with(tmp_path, tmp_path / "nope.py")
    (line,) = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and line.startswith("E002 ") and "nope.py" in line, line
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / f"mod_{sub}.py").write_text(SITE_MODULE)
    proc = pack_with(tmp_path, tmp_path / "a" / "mod_a.py", tmp_path / "b" / "mod_b.py")
    (line,) = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "labelsim" in line and "mod_a.py" in line and "mod_b.py" in line, line
