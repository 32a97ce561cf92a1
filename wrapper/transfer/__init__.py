"""Moving files: one small interface, three implementations.

    Transfer            copy_in, copy_out, stat, checksum, mkdir, delete, listdir, rename
    ├── Gfal2Transfer   gfal2 bindings (root://, http(s)://, dav(s)://), a context per thread
    ├── PosixTransfer   direct access: plain paths on a mounted SE
    └── CliTransfer     xrdcp/xrdfs for root://, gfal-* commands for the other schemes

The rooms: `interface` (Transfer, what downloads share), `errors` (TransferError, kind one
of not_found / checksum / timeout / failed / cancelled / auth, and `classify_error`),
`attempts` (`copy_with_retries`: the size-based timeout, retries with backoff and one
attempt record per try), `progress` (the bytes of running copies for heartbeats, and the
stall watch that gives up a copy that moved nothing for `[transfer] stall_s`), `timeouts` (every copy ends by its deadline whatever the tool does,
and at once when its `cancel` is set), one module per implementation (`gfal2` with its
context pool, `posix`, `commands`), `urls`. What the rest of the wrapper uses is imported
from here: `make_transfer` chooses the implementation for a URL, `bulk_transfer_for` the
mover for many small files.

`upload` is the wrapper's API for other programs that put a file on an SE for jobs to read
(`sbk demo`'s toy release, a release manager's script): it stays as it is documented here,
whatever the rest of this package becomes.
"""
import importlib
import shutil

# Each export is imported from its module at its first use (PEP 562's module __getattr__): a job
# whose software is cached and has no input starts its payload without the modules of the
# implementations and retries (the time from `severus run` to the payload, bench_wrapper).
_EXPORTS = {"attempt_record": "attempts", "copy_with_retries": "attempts", "CliTransfer": "commands",
            "TransferError": "errors", "classify_error": "errors", "Gfal2Transfer": "gfal2",
            "gfal2_available": "gfal2", "RemoteStat": "interface", "Transfer": "interface",
            "part_path": "interface", "PosixTransfer": "posix", "Progress": "progress", "watched": "progress",
            "copies_left_behind": "timeouts", "is_local": "urls", "is_root": "urls"}


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value   # once: later reads are plain module attributes
    return value


__all__ = ["CliTransfer", "Gfal2Transfer", "PosixTransfer", "RemoteStat", "Transfer", "TransferError",
           "attempt_record", "bulk_transfer_for", "classify_error", "copies_left_behind", "copy_with_retries",
           "make_transfer", "part_path", "upload", "Progress", "watched"]


def make_transfer(url, tool="auto"):
    """The implementation for `url`: POSIX for paths; else gfal2 bindings unless `tool` is
    "cli" or the bindings are missing."""
    from .commands import CliTransfer
    from .errors import TransferError
    from .gfal2 import Gfal2Transfer, gfal2_available
    from .posix import PosixTransfer
    from .urls import is_local, is_root
    if is_local(url):
        return PosixTransfer()
    if tool in ("auto", "gfal2") and gfal2_available():
        return Gfal2Transfer()
    if tool == "gfal2":
        # The site asked for gfal2 but this node lacks it: the command line still moves files.
        return CliTransfer()
    if tool == "cli" and is_root(url) and not shutil.which("xrdcp"):
        raise TransferError("failed", "xrdcp is not installed (Debian: xrootd-client)")
    return CliTransfer()


def bulk_transfer_for(transfer, url):
    """The mover for many small files from `url`: for root://, one `xrdcp --parallel` process
    when xrdcp is installed (here ~1,830 files/s against ~1,000-1,440 for gfal2's bulk copy,
    which also spends ~1.5x the CPU); otherwise `transfer` itself."""
    from .commands import CliTransfer
    from .urls import is_root
    if isinstance(transfer, CliTransfer) or not is_root(url) or not shutil.which("xrdcp"):
        return transfer
    return CliTransfer()


def upload(path, url, adler32=None, *, env=None, timeout=60.0):
    """Copy the local file `path` to `url` on an SE, making its parents; return the adler32 the
    SE computes of what it holds, which must equal `adler32` (default: the file's own), else
    TransferError("checksum"). Any other failure is a TransferError too, its `kind` saying how.
    `env`: the command-line tools do it, in exactly that environment (another identity's proxy
    or token: gfal2 and XrdCl in this process read credentials from os.environ once); without
    it, the implementation `make_transfer` chooses. `timeout`: the seconds the copy may take."""
    from .commands import CliTransfer
    transfer = make_transfer(url) if env is None else CliTransfer(env)
    return transfer.copy_out(str(path), url, timeout, adler32=adler32)
