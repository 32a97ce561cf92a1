"""The architecture's one rule that imports can break: wrapper and server meet only through the
job description, the HTTP API and `shared/`. The server may use the wrapper's one documented door
(`wrapper.transfer.upload`, for `sbk demo`'s release) and nothing else of it; `shared/` and the
wrapper never import the server."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_MAY_USE = {("wrapper.transfer", "upload"), ("wrapper.transfer", "TransferError")}


def imports(package):
    """(file, module, name) for every import in `package`, relative ones resolved."""
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name, None
            elif isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    base = parts[:len(parts) - node.level]   # a module's package; __init__'s own
                    module = ".".join(base + ((module,) if module else ()))
                for alias in node.names:
                    yield path, module, alias.name


def test_the_server_uses_only_the_wrappers_documented_door():
    found = [(str(p.relative_to(ROOT)), m, n) for p, m, n in imports("server")
             if (m == "wrapper" or m.startswith("wrapper.")) and (m, n) not in SERVER_MAY_USE]
    assert found == []


def test_shared_and_the_wrapper_never_import_the_server():
    for package in ("shared", "wrapper"):
        found = [(str(p.relative_to(ROOT)), m) for p, m, _ in imports(package)
                 if m == "server" or m.startswith("server.")]
        assert found == [], package


def test_shared_uses_the_standard_library_alone():
    import sys
    third_party = [(str(p.relative_to(ROOT)), m) for p, m, _ in imports("shared")
                   if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "shared"]
    assert third_party == []
