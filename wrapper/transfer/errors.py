"""How a transfer fails: `TransferError(kind)` and the one classification of a tool's failure.

Each implementation turns its tool's failures into a TransferError at one place (`_errors`
for gfal2 and POSIX, `_run` for the commands), through `classify_error` for the tools that
answer in text and errno.
"""
import errno

KINDS = ("not_found", "checksum", "timeout", "failed", "cancelled",   # "cancelled": only on a cancel
         "auth")   # the SE refused our credential: not a passing fault, never retried
# How each tool says the SE refused who we are or what we may do (measured on XRootD 5.5 and
# gfal2 2.21: xrdcp exit 52 "Auth failed: No protocols left to try" for a missing, expired or
# unmapped credential, 54 "[3010] ... permission denied" for a read-only token; davs: HTTP 403
# (GError 1 or 17), 401; an expired proxy over davs fails TLS (GError 112 "certificate expired");
# a proxy variable naming a missing file, xrdcp exit 51 "Unable to use cert+key file").
AUTH_MARKERS = ("auth failed", "[3010]", "http 401", "http 403", "permission refused", "not authorized",
                "certificate expired", "unable to use cert+key file", "authentication failed")


class TransferError(Exception):
    """A transfer or namespace operation failed; `kind` says how."""

    def __init__(self, kind, message):
        if kind not in KINDS:
            raise ValueError(f"unknown transfer error kind {kind!r}")
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


def classify_error(message, code=None):
    """The kind of a tool's failure, from its errno (when it has one) and its text."""
    text = (message or "").lower()
    if any(s in text for s in AUTH_MARKERS):
        return "auth"
    if code == errno.ENOENT or any(s in text for s in (
            "no such file", "[3011]", "http 404", "not found")):
        return "not_found"
    if "checksum" in text and any(s in text for s in ("mismatch", "checksum error", "do not match")):
        return "checksum"
    if code == errno.ETIMEDOUT or any(s in text for s in ("timed out", "timeout", "operation expired")):
        return "timeout"
    return "failed"
