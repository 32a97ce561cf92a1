"""Splitting a request into jobs (seed 001's "job splitting"): which input files each job gets.

A request with input mode LIST or DIR is split in one of two ways:
- `files_per_job` N, a request setting (0: not split): each job gets the next N of the request's
  input files, in order, the last job the rest. LIST: the request's `input_paths`; DIR: the LFNs the
  catalog holds below its directory, recursively and sorted (what the wrapper's DIR mode stages),
  read when the bulk is planned: an empty directory is refused (409 empty-input-dir).
- a bulk's `split` at submission (LIST requests only): an explicit list whose elements each become
  one job (seed 001: "every element of a Python list applied to the workflow generates one element
  of the production"). Each element is a non-empty list of the request's own input LFNs: the list
  groups what the request processes, it adds nothing to it.
A request can also be split by events, as always: `events_per_job` and the bulk's `events`.

A job's slice is stored on the job (`Job.input_paths`, migration 13; null: the request's whole
input, as before splitting) and its description's input is then LIST of the slice. A resubmitted
job is the same row with a new attempt, so it keeps its slice.

Submitting a split request again: nothing is processed twice by accident. A file already in the
slice of one of the request's jobs, whatever that job's status (a failed job is resubmitted with its
slice, not split again), goes to no new job: with `files_per_job` the files not yet given are cut
into slices (a DIR that has grown gets jobs for its new files only); of an explicit list, an element
whose files were all given is left out, and one that shares only some of its files with earlier
slices is refused (409 slice-overlap). A bulk's `repeat_slices: true` makes every slice again (a
new pass over the same inputs). Nothing left to give: 409 no-pending-slices. Jobs without a slice
(the request's whole input) do not count.

A split bulk's `runs` is optional: without it every pending slice becomes a job, dealt to the
bulk's sites in order, in contiguous shares as equal as they go; with it, at most `runs` jobs per
site, and the slices left over wait for the next submission (the summary's `left`).
"""
from dataclasses import dataclass

from shared import schema as s
from shared.jobdesc import input_name_clash

from . import catalog
from . import models as m
from .errors import bad_request, conflict

SPLIT_MODES = ("LIST", "DIR")
MAX_FILES_PER_JOB = 10_000      # a LIST request's own limit of input paths
MAX_SPLIT_ELEMENTS = 10_000     # jobs one explicit list makes
SHOWN_SLICES = 3                # slices a summary shows in full


def read_files_per_job(body, key):
    """A request's `files_per_job`: 0 (not split) to MAX_FILES_PER_JOB."""
    return s.integer(body, key, hi=MAX_FILES_PER_JOB)


def check_split_setting(settings):
    """A request's `files_per_job` splits LIST or DIR input only (400)."""
    mode = settings.get("input_mode", "NONE")
    if settings.get("files_per_job") and mode not in SPLIT_MODES:
        raise bad_request(f"'files_per_job' splits LIST or DIR input, and the input mode is {mode}: "
                          "leave it 0 (split by events with events_per_job)")


def read_split(body, key, where=""):
    """A bulk's explicit `split`: a non-empty list of non-empty lists of LFNs, as a tuple of tuples."""
    raw = body[key]
    if not isinstance(raw, list) or not raw:
        raise s.SchemaError(f"'{where}{key}' must be a non-empty list of LFN lists (one job each)")
    if len(raw) > MAX_SPLIT_ELEMENTS:
        raise s.SchemaError(f"'{where}{key}' has more than {MAX_SPLIT_ELEMENTS} elements (jobs)")
    elements = []
    for n, element in enumerate(raw):
        name = f"{where}{key}[{n}]"
        if not isinstance(element, list) or not element:
            raise s.SchemaError(f"'{name}' must be a non-empty list of LFNs (one job's inputs)")
        if len(element) > MAX_FILES_PER_JOB:
            raise s.SchemaError(f"'{name}' has more than {MAX_FILES_PER_JOB} LFNs")
        elements.append(tuple(s.check_lfn(lfn, f"{name}[{i}]") for i, lfn in enumerate(element)))
    return tuple(elements)


def given_files(req):
    """{LFN: runnum} of every file in the slice of one of `req`'s jobs (none for a request still unsaved)."""
    if req.id is None:
        return {}
    given = {}
    for runnum, paths in m.Job.select(m.Job.runnum, m.Job.input_paths).where(
            (m.Job.request == req.id) & m.Job.input_paths.is_null(False)).tuples():
        for lfn in m.Job.input_paths.python_value(paths) if isinstance(paths, str) else paths:
            given.setdefault(lfn, runnum)
    return given


@dataclass(frozen=True)
class Split:
    """A bulk's pending slices, in order, and what its summary says of them."""
    by: str                  # "files_per_job" or "list"
    files_per_job: int       # 0 for an explicit list
    input_files: int         # the request's input files (LIST paths, the DIR's listing), or the list's
    slices: tuple            # tuples of LFNs, each one job's inputs
    already_given: int       # input files left out: already in a job's slice
    repeat: bool

    def summary(self, made):
        """The plan's `split` of a set that made `made` of the slices."""
        return {"by": self.by, "files_per_job": self.files_per_job or None, "input_files": self.input_files,
                "slices": made, "left": len(self.slices) - made, "files_already_given": self.already_given,
                "repeat_slices": self.repeat, "first_slices": [list(x) for x in self.slices[:SHOWN_SLICES]]}


def plan_split(req, explicit, repeat, where, given):
    """The Split of a bulk on `req` (None: not split): its explicit list `explicit` (or None: the
    request's files_per_job), `given` the files already in slices ({LFN: runnum, None: planned in
    this submission}). Refusals in one line (see the module doc)."""
    name = f"request {req.id}" if req.id else "the new test request"
    if explicit is not None:
        if req.input_mode != "LIST":
            raise bad_request(f"'{where}split' is for LIST requests, and {name} has input mode {req.input_mode}")
        slices, already = _pending_elements(req, explicit, repeat, where, given)
        by, per, files = "list", 0, sum(len(e) for e in explicit)
    elif req.files_per_job and req.input_mode in SPLIT_MODES:
        inputs = list(req.input_paths) if req.input_mode == "LIST" else directory_files(req.input_paths[0])
        if not inputs:
            raise conflict("empty-input-dir", f"{name}'s input directory {req.input_paths[0]} holds no file in "
                                              "the catalog: nothing to split into jobs")
        pending = inputs if repeat else [lfn for lfn in inputs if lfn not in given]
        per = req.files_per_job
        slices = [tuple(pending[i:i + per]) for i in range(0, len(pending), per)]
        by, files, already = "files_per_job", len(inputs), len(inputs) - len(pending)
    else:
        return None
    if not slices:
        raise conflict("no-pending-slices", f"every input file of {name} is already in a job's slice ({already} "
                                            f"files): give '{where}repeat_slices': true to make them again")
    for n, piece in enumerate(slices, start=1):
        _check_names(piece, n, where, explicit is not None)
    return Split(by=by, files_per_job=per, input_files=files, slices=tuple(slices), already_given=already,
                 repeat=repeat)


def _pending_elements(req, explicit, repeat, where, given):
    """The elements of an explicit list that make jobs, and how many files were left out as given."""
    known, seen = set(req.input_paths), {}
    for n, element in enumerate(explicit):
        for lfn in element:
            if lfn not in known:
                raise bad_request(f"'{where}split[{n}]': {lfn} is not one of the request's input paths "
                                  "(the list groups the request's inputs into jobs, it adds none)")
            if lfn in seen:
                raise bad_request(f"'{where}split[{n}]': {lfn} is in '{where}split[{seen[lfn]}]' too")
            seen[lfn] = n
    if repeat:
        return list(explicit), 0
    slices, already = [], 0
    for n, element in enumerate(explicit):
        taken = [lfn for lfn in element if lfn in given]
        if not taken:
            slices.append(element)
        elif len(taken) == len(element):
            already += len(element)
        else:
            owner = given[taken[0]]
            raise conflict("slice-overlap", f"'{where}split[{n}]': {taken[0]} is already in the slice of "
                                            + ("an earlier bulk" if owner is None else f"job {owner}")
                                            + f" and {len(element) - len(taken)} of its files are in none: give "
                                            f"'{where}repeat_slices': true to make every element again")
    return slices, already


def _check_names(piece, number, where, explicit):
    """A job's LIST inputs land in its work dir by file name: two of one name cannot share a slice."""
    clash = input_name_clash(piece)
    if clash:
        message = (f"'{where}split': slice {number} holds {clash[0]} and {clash[1]}, one file name" if explicit
                   else f"slice {number} would hold {clash[0]} and {clash[1]}: a job stages its inputs by "
                        "file name, and these share one")
        raise (bad_request(message) if explicit else conflict("input-name-clash", message))


def check_unsplit_names(req, where):
    """An unsplit LIST request gives each job all its input paths: two of one file name are a 400 (the
    wrapper would refuse the job's description, shared/jobdesc.py)."""
    clash = input_name_clash(req.input_paths) if req.input_mode == "LIST" else None
    if clash:
        name = f"request {req.id}" if req.id else f"'{where}input_paths'"
        raise bad_request(f"{name} gives one job {clash[0]} and {clash[1]}, one file name: a job stages its "
                          f"LIST inputs by file name; put them in different jobs with '{where}split' or the "
                          "request's files_per_job")


def directory_files(lfn_dir):
    """The LFNs below a DIR request's directory, as the wrapper's DIR mode would stage them."""
    return [f["lfn"] for f in catalog.files_below(lfn_dir)]


def note_given(given, slices):
    """Slices planned in this submission: later bulks of it on the same request skip their files."""
    for piece in slices:
        for lfn in piece:
            given.setdefault(lfn, None)


def deal(count, sites, runs=None):
    """How many of `count` slices each of `sites` sites takes, in order: at most `runs` each, or
    contiguous shares as equal as they go."""
    if not sites:
        return []
    if runs:
        shares, left = [], count
        for _ in range(sites):
            shares.append(min(runs, left))
            left -= shares[-1]
        return shares
    q, r = divmod(count, sites)
    return [q + (1 if i < r else 0) for i in range(sites)]


def job_input(job, req):
    """The input of `job`'s description: its slice as a LIST, or (not split) its request's input."""
    if job.input_paths is not None:
        return {"mode": "LIST", "paths": list(job.input_paths)}
    return {"mode": req.input_mode, "paths": list(req.input_paths)}
