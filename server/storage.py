"""The server's own reach into storage: deleting one file by its URL, for removal requests.

Through the command-line clients (xrdfs for root://, gfal-rm for the other grid schemes),
each in a process group of its own that is killed at the timeout: a removal pass must
never hang on a silent SE, and the server never holds a gfal2 context in its workers.
The server reads the wrapper's rules on names (shared/outputs.py), never its code.
"""
import os
import signal
import subprocess
import urllib.parse

# Schemes the server can reach; anything else (a worker node's POSIX path) needs a person.
ROOT_SCHEMES = ("root", "xroot")
GRID_SCHEMES = ROOT_SCHEMES + ("davs", "https", "dav", "http", "gsiftp", "srm")
GFAL_PYTHONBIN = "/usr/bin/python3"   # gfal-* scripts run /usr/bin/python otherwise (INFRA.md)


class StorageError(Exception):
    """The SE did not delete the file; the message is one line."""


class NotFound(StorageError):
    """The file is not there (already deleted, never written): nothing left to do."""


def reachable(surl):
    """True when the server can delete `surl` itself (a grid URL, not a node's path)."""
    return urllib.parse.urlsplit(surl).scheme in GRID_SCHEMES


def delete(surl, timeout_s=60.0):
    """Delete the file `surl`; raise NotFound or StorageError."""
    parts = urllib.parse.urlsplit(surl)
    if parts.scheme in ROOT_SCHEMES:
        argv = ["xrdfs", f"{parts.scheme}://{parts.netloc}", "rm", "/" + parts.path.lstrip("/")]
    elif parts.scheme in GRID_SCHEMES:
        argv = ["gfal-rm", surl]
    else:
        raise StorageError(f"{surl}: the server cannot reach this scheme")
    env = dict(os.environ, XRD_CONNECTIONRETRY="1", GFAL_PYTHONBIN=GFAL_PYTHONBIN)
    env.setdefault("XRD_REQUESTTIMEOUT", str(int(max(1, timeout_s))))
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, text=True, start_new_session=True)
    except OSError as exc:
        raise StorageError(f"cannot run {argv[0]}: {exc.strerror}") from None
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise StorageError(f"{argv[0]} did not answer within {timeout_s:g} s") from None
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
    if proc.returncode == 0:
        return
    text = " ".join(out.split())[-300:]
    if any(s in text.lower() for s in ("no such file", "[3011]", "not found", "enoent")):
        raise NotFound(text)
    raise StorageError(f"{argv[0]} exit {proc.returncode}: {text}")
