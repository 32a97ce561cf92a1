"""The error-code table and the exception hierarchy that carries it.

One table (CODES) holds every three-digit code of CONTRACT §5 with its job
status, who is to blame, whether a retry elsewhere may help, and its message.
The server serves it as is (GET /api/v1/error-codes); the wrapper exits with
the code.

    SeverusError                      code 099 unless a subclass says otherwise
    ├── JobDescriptionError           001
    ├── SiteConfigError               002
    ├── ScratchSpaceError             003
    ├── NodeCheckError                004
    ├── ContainerError                007
    ├── SoftwareError                 010-019
    ├── InputError                    020-029
    ├── PayloadError                  030-039
    ├── StageOutError                 040-049
    ├── LogUploadError                050
    ├── WrapperSignalled              060
    ├── AttemptSuperseded             061
    ├── KilledByManager               062
    └── WrapperError                  099

This module imports nothing from the rest of the project.
"""
from dataclasses import dataclass, asdict


@dataclass(frozen=True)
class ErrorCode:
    code: int
    status: str       # the job status this code ends in
    blame: str        # payload | site | storage | server | wrapper | manager
    # Would the same job, unchanged, likely succeed on another attempt? False when it cannot: the
    # attempt already tried every replica (010, 011, 020, 021), the job or its data are wrong
    # (001, 013, 014, 042, 044), the payload decided (030-035), a person decided (061, 062).
    retryable: bool
    message: str

    def to_dict(self):
        return asdict(self)

    @property
    def label(self):
        return f"{self.code:03d}"


_TABLE = [
    (0, "done", "wrapper", False, "success"),
    (1, "sys-failed", "manager", False, "bad job description"),
    (2, "sys-failed", "site", True, "bad or missing site configuration"),
    (3, "sys-failed", "site", True, "not enough scratch space"),
    (4, "sys-failed", "site", True, "worker node check failed"),
    (5, "sys-failed", "site", True, "grid credential missing or too short-lived for the stage"),
    (6, "sys-failed", "manager", False, "the job's own grid credential missing or too short-lived"),
    (7, "sys-failed", "site", True, "payload container could not start"),
    (10, "sys-failed", "storage", False, "software tarball not found"),
    (11, "sys-failed", "storage", False, "software tarball checksum mismatch"),
    (12, "sys-failed", "site", True, "software tarball could not be unpacked"),
    (13, "sys-failed", "manager", False, "software tarball has members escaping the unpack root"),
    (14, "sys-failed", "manager", False, "software workdir or executable missing"),
    (15, "sys-failed", "storage", True, "software transfer failed after retries"),
    (16, "sys-failed", "site", True, "software transfer refused: the SE did not accept our credential"),
    (17, "sys-failed", "site", True, "software area missing or unreadable"),
    (20, "sys-failed", "storage", False, "input file not found"),
    (21, "sys-failed", "storage", False, "input file checksum mismatch"),
    (22, "sys-failed", "storage", True, "input transfer failed after retries"),
    (23, "sys-failed", "site", True, "input transfer refused: the SE did not accept our credential"),
    (30, "failed", "payload", False, "payload exited non-zero"),
    (31, "failed", "payload", False, "payload killed by a signal"),
    (32, "timeout", "payload", False, "payload passed its wallclock limit"),
    (33, "failed", "payload", False, "payload passed its memory limit"),
    (34, "failed", "payload", False, "payload stalled (no progress)"),
    (35, "failed", "payload", False, "data-quality check failed on the outputs"),
    (40, "sys-failed", "storage", True, "stage-out failed on every storage element"),
    (41, "sys-failed", "storage", True, "output checksum mismatch on the storage element"),
    (42, "sys-failed", "payload", False, "no output files matched the output patterns"),
    (43, "sys-failed", "server", True, "output registration failed: the server did not answer or refused"),
    (44, "sys-failed", "manager", False, "output registration refused: the LFN is another job's file"),
    (45, "sys-failed", "site", True, "stage-out refused: the SE did not accept our credential"),
    (50, "sys-failed", "storage", True, "log upload failed (outputs kept)"),
    (51, "sys-failed", "site", True, "log upload refused: the SE did not accept our credential (outputs kept)"),
    (60, "sys-failed", "site", True, "wrapper stopped by a signal from the batch system"),
    (61, "sys-failed", "server", False, "attempt superseded: the server refused this attempt's reports"),
    (62, "sys-failed", "manager", False, "killed on a manager's request"),
    (99, "sys-failed", "wrapper", True, "unexpected wrapper error"),
    (100, "timeout", "site", True, "heartbeat lost (server side)"),
]

CODES = {row[0]: ErrorCode(*row) for row in _TABLE}
SUCCESS = CODES[0]


def lookup(code):
    """The ErrorCode for `code`, or 099's entry for a code we do not know."""
    return CODES.get(code, CODES[99])


class SeverusError(Exception):
    """Base of every error that ends a job; `code` is the three-digit code."""
    code = 99

    def __init__(self, detail="", code=None, **data):
        super().__init__(detail)
        if code is not None:
            self.code = code
        self.detail = detail
        self.data = data   # extra facts for the final report (exit code, signal, ...)

    @property
    def entry(self):
        return lookup(self.code)

    def __str__(self):
        return self.detail or self.entry.message

    def one_line(self):
        """What a person sees: `E011 software tarball checksum mismatch: <detail>`."""
        text = self.entry.message
        if self.detail and self.detail != text:
            text = f"{text}: {self.detail}"
        return f"E{self.code:03d} {text}".replace("\n", " ")


class JobDescriptionError(SeverusError):
    code = 1


class SiteConfigError(SeverusError):
    code = 2


class ScratchSpaceError(SeverusError):
    code = 3


class NodeCheckError(SeverusError):
    code = 4


class ContainerError(SeverusError):
    """The payload's container could not start: no runtime, image missing, runtime failure."""
    code = 7


class CredentialError(SeverusError):
    """The node's grid credential is missing or too short-lived for the stage (blame site)."""
    code = 5


class JobCredentialError(CredentialError):
    """A job-supplied credential missing or too short-lived (blame manager)."""
    code = 6


class SoftwareError(SeverusError):
    code = 15


class SoftwareNotFound(SoftwareError):
    code = 10


class SoftwareChecksumMismatch(SoftwareError):
    code = 11


class SoftwareUnpackError(SoftwareError):
    code = 12


class UnsafeArchive(SoftwareError):
    code = 13


class ExecutableMissing(SoftwareError):
    code = 14


class SoftwareAuthRefused(SoftwareError):
    code = 16


class SoftwareAreaUnavailable(SoftwareError):
    """A shared software area (software.path, the CVMFS way) missing or unreadable on this node."""
    code = 17


class InputError(SeverusError):
    code = 22


class InputNotFound(InputError):
    code = 20


class InputChecksumMismatch(InputError):
    code = 21


class InputAuthRefused(InputError):
    code = 23


class PayloadError(SeverusError):
    code = 30


class PayloadFailed(PayloadError):
    code = 30


class PayloadSignalled(PayloadError):
    code = 31


class PayloadWallclock(PayloadError):
    code = 32


class PayloadMemory(PayloadError):
    code = 33


class PayloadStalled(PayloadError):
    code = 34


class DataQualityFailed(PayloadError):
    """A data-quality step (the `dq` module) exited non-zero: the outputs are not good."""
    code = 35


class StageOutError(SeverusError):
    code = 40


class OutputChecksumMismatch(StageOutError):
    code = 41


class NoOutputsMatched(StageOutError):
    code = 42


class RegistrationFailed(StageOutError):
    code = 43


class RegistrationRefused(StageOutError):
    code = 44


class StageOutAuthRefused(StageOutError):
    code = 45


class LogUploadError(SeverusError):
    code = 50


class LogUploadAuthRefused(LogUploadError):
    code = 51


class WrapperSignalled(SeverusError):
    code = 60


class AttemptSuperseded(SeverusError):
    code = 61


class KilledByManager(SeverusError):
    code = 62


class WrapperError(SeverusError):
    code = 99
