"""`severus pack`: one file, severus.pyz, that runs on a node with only python3.

It holds the project's `wrapper/` and `shared/` packages, `site_configs/`
(a package, so the bundled configs are read with importlib.resources from
inside the zip) and tomli's pure-Python sources for Python < 3.11, where
`tomllib` does not exist. Compiled files are left out: the archive must work
on any CPython >= 3.9, not only the one that built it.

tomli is an install requirement of severus on every Python (setup.py), so any
install can pack; it is found by its spec, never imported here.
"""
import importlib.util
import shutil
import tempfile
import zipapp
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("wrapper", "shared", "site_configs")
SOURCE_SUFFIXES = (".py", ".toml", ".typed")

# sys.path[0] is the archive itself, except under `python -I` on some versions:
# put it there explicitly so `python3 -I -S severus.pyz` finds its packages.
MAIN = '''\
import os, sys
_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)
from wrapper.cli import main
sys.exit(main())
'''


def _copy_sources(src: Path, dst: Path):
    for path in sorted(src.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        if path.suffix not in SOURCE_SUFFIXES:
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)


def _tomli_dir():
    """Where the installed tomli lives (its .py files work without its compiled twins)."""
    spec = importlib.util.find_spec("tomli")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def build_pyz(out="severus.pyz", root=ROOT, require_tomli=True) -> Path:
    """Write the zipapp to `out`; return its path."""
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="severus-pack-") as tmp:
        stage = Path(tmp) / "app"
        for name in PACKAGES:
            _copy_sources(Path(root) / name, stage / name)
        tomli = _tomli_dir()
        if tomli is not None:
            _copy_sources(tomli, stage / "tomli")
        elif require_tomli:
            raise RuntimeError("tomli is not installed (an install requirement of severus: installed "
                               "with --no-deps?): severus.pyz needs its sources for Python < 3.11 "
                               "(pip install tomli)")
        (stage / "__main__.py").write_text(MAIN)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_name(out.name + ".part")
        zipapp.create_archive(stage, tmp_out, interpreter="/usr/bin/env python3", compressed=True)
        tmp_out.replace(out)
    return out
