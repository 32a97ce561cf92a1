"""`severus pack`: one file, severus.pyz, that runs on a node with only python3.

It holds the project's `wrapper/` and `shared/` packages, `site_configs/`
(a package, so the bundled configs are read with importlib.resources from
inside the zip) and tomli's pure-Python sources for Python < 3.11, where
`tomllib` does not exist. Compiled files are left out: the archive must work
on any CPython >= 3.9, not only the one that built it.

tomli is an install requirement of severus on every Python (setup.py), so any
install can pack; it is found by its spec, never imported here.

A site's own payload modules go in with `--module FILE` (entry points, the
installed way, do not exist in a zip): each file, one self-contained Python
module (the standard library and wrapper/shared only), is imported and checked
here and copied into the archive's `severus_site_modules` package, whose
MODULES ({name: "file:Class"}) wrapper/modules.py reads on the node.
"""
import importlib.util
import shutil
import sys
import tempfile
import zipapp
from pathlib import Path

from shared.errors import SiteConfigError

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


def site_modules(paths):
    """({payload module name: "file:Class"}, {file stem: path}) of the module files `paths`, each
    imported and checked now: a file that is missing, does not import, defines no payload module or
    names one already taken is a SiteConfigError (002) naming it, here and not on a node."""
    from .modules import MODULES, PACKED_PACKAGE, PayloadModule
    found, files = {}, {}
    for path in map(Path, paths):
        if not path.is_file() or path.suffix != ".py" or not path.stem.isidentifier():
            raise SiteConfigError(f"{path}: not a Python module file (--module takes a file like mysim.py)")
        if path.stem in files:
            raise SiteConfigError(f"{path}: a module file of that name is given already ({files[path.stem]})")
        files[path.stem] = path
        spec = importlib.util.spec_from_file_location(f"{PACKED_PACKAGE}.{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module   # as on the node: dataclasses and pickling look it up
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the site's code: its error, in one line
            raise SiteConfigError(f"{path}: cannot be imported: {type(exc).__name__}: {exc}") from None
        finally:
            sys.modules.pop(spec.name, None)
        classes = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, PayloadModule)
                   and c.__module__ == spec.name and "name" in vars(c)]
        if not classes:
            raise SiteConfigError(f"{path}: defines no payload module (a subclass of "
                                  "wrapper.modules.PayloadModule with a name)")
        for cls in classes:
            if cls.name in MODULES:
                raise SiteConfigError(f"{path}: {cls.name!r} is a built-in payload module: give yours another name")
            if cls.name in found:
                other = files[found[cls.name].split(":")[0]]
                raise SiteConfigError(f"{path}: payload module {cls.name!r} is defined in {other} too")
            found[cls.name] = f"{path.stem}:{cls.__name__}"
    return found, files


def _stage_site_modules(paths, stage):
    """The checked module files and their registry in `stage`/severus_site_modules."""
    from .modules import PACKED_PACKAGE
    found, files = site_modules(paths)
    if found:
        package = stage / PACKED_PACKAGE
        package.mkdir()
        for stem, path in files.items():
            shutil.copyfile(path, package / f"{stem}.py")
        (package / "__init__.py").write_text(
            '"""The payload modules this severus.pyz was packed with (severus pack --module)."""\n'
            f"MODULES = {found!r}\n")


def build_pyz(out="severus.pyz", root=ROOT, require_tomli=True, modules=()) -> Path:
    """Write the zipapp to `out`, with the site's payload module files `modules`; return its path."""
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="severus-pack-") as tmp:
        stage = Path(tmp) / "app"
        stage.mkdir()
        _stage_site_modules(modules, stage)
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
