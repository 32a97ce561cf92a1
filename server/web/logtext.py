"""The text of a stored job log (a gzipped tarball), read in memory with a ceiling."""
import io
import tarfile
from dataclasses import dataclass

MAX_TEXT_BYTES = 512 * 1024   # per page: a huge or hostile tarball cannot fill the server's memory


@dataclass(frozen=True)
class LogMember:
    name: str
    size: int
    text: str
    truncated: bool


def log_members(data, limit=MAX_TEXT_BYTES):
    """The regular files in the tarball `data`, as text, up to `limit` bytes in all; [] when unreadable."""
    members, left = [], limit
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                raw = tar.extractfile(info).read(max(left, 0))
                left -= len(raw)
                members.append(LogMember(info.name, info.size, raw.decode("utf-8", "replace"),
                                         len(raw) < info.size))
    except (tarfile.TarError, EOFError, OSError):
        return members
    return members
