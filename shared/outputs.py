"""How an attempt names the files it writes on a storage element.

Outputs are immutable: no attempt ever overwrites or deletes a file another
attempt wrote. The LFN users see stays stable (`<lfn_dir>/<name>`), while the
physical file carries the attempt number as a last suffix, as PanDA does:
`<name>.<attempt>` (out.root -> out.root.2). The catalog holds the replica of
the attempt that registered last; a newer attempt's registration replaces an
older one's, whose file the server then deletes (a removal request).

An upload first goes to `<physical name>.severus-upload` and is renamed once
the SE's size and adler32 match, so a half-written file never carries a final
name. The log tarball's LFN already names its attempt
(`<lfn_dir>/log/<runnum>.<attempt>.log.tgz`), so its physical name is its LFN's.

The server reads these rules too: a wrapper may ask it to delete only files
named like its own job's outputs (server/removals.py).
"""
UPLOAD_SUFFIX = ".severus-upload"


def physical_name(name, attempt):
    """The file name attempt `attempt` gives the output called `name` on an SE."""
    return f"{name}.{int(attempt)}"


def log_name(runnum, attempt):
    """The name (LFN and physical) of an attempt's log tarball."""
    return f"{runnum}.{attempt}.log.tgz"


def attempt_of(name, runnum):
    """The attempt that names a file `name` in a job of `runnum` (an output's physical name, the log,
    or the upload name of either), or None when this job's attempts never name a file so."""
    if name.endswith(UPLOAD_SUFFIX):
        name = name[:-len(UPLOAD_SUFFIX)]
    prefix, suffix = f"{runnum}.", ".log.tgz"
    if name.startswith(prefix) and name.endswith(suffix):
        name = name[len(prefix):-len(suffix)]
        return int(name) if name.isdigit() else None
    head, _, tail = name.rpartition(".")
    return int(tail) if head and tail.isdigit() else None
