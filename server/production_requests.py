"""Production requests: their settings, their test twins, how they are shown."""
from shared import schema as s
from shared.jobdesc import INPUT_MODES, NAME_RE

from . import models as m


SETTINGS = {
    "priority": lambda d, k: s.integer(d, k, hi=1000),
    "min_runnum": lambda d, k: s.integer(d, k, lo=1, hi=2 ** 62),
    "required_events": lambda d, k: s.integer(d, k, hi=10 ** 15),
    "events_per_job": lambda d, k: s.integer(d, k, hi=10 ** 12),
    "num_jobs": lambda d, k: s.integer(d, k, hi=10 ** 7),
    "event_time_s": lambda d, k: s.number(d, k, hi=1e7),
    "max_wct_s": lambda d, k: s.number(d, k, lo=1, hi=30 * 86400),
    "max_rss_mb": lambda d, k: s.number(d, k, hi=1024 * 1024),
    "stall_s": lambda d, k: s.number(d, k, hi=30 * 86400),
    "input_mode": lambda d, k: s.text(d, k, pattern="|".join(INPUT_MODES)),
    "input_paths": lambda d, k: [s.check_lfn(p, f"{k}[{n}]") for n, p in
                                 enumerate(s.text_list(d, k, max_items=10000, max_len=1024))],
    "output_lfn": lambda d, k: s.lfn(d, k),
    "output_abs": lambda d, k: s.text(d, k, max_len=1024, empty=True),
    "output_sites": lambda d, k: list(s.text_list(d, k, max_items=100, pattern=NAME_RE, max_len=64)),
    "output_patterns": lambda d, k: list(s.text_list(d, k, max_items=100, pattern=r"[^/\x00]+", max_len=256)),
    "note": lambda d, k: s.text(d, k, max_len=255, empty=True),
}
# The test request's output directories, chosen on its main request: a test request's own setting of the
# same name, or `same_output_dirs: true` to share the main request's (seed: "Same output directories for
# the associated test request", off by default).
TEST_DIRS = {"output_lfn": "test_output_lfn", "output_abs": "test_output_abs"}
TEST_SETTINGS = (*TEST_DIRS.values(), "same_output_dirs")


def get_request(request_id):
    return m.get_or_404(m.Request, m.Request.id == request_id, f"request {request_id}")


def request_dict(req, twin=None):
    """A request as the API shows it; `twin` is its test request when the caller has it already."""
    d = {"id": req.id, "production": req.production.name, "parameters": req.parameters,
         "status": req.status, "test_request": req.test_request_id,
         "created_by": req.created_by.name if req.created_by_id else None,
         "created_at": m.iso(req.created_at)}
    d.update({name: getattr(req, name) for name in SETTINGS})
    twin = twin or (req.test_request if req.test_request_id else None)
    d.update({field: getattr(twin, name) if twin else None for name, field in TEST_DIRS.items()})
    d["same_output_dirs"] = shares_dirs(req, twin) if twin else None
    d["jobs"] = {status: count for status, count in (
        m.Job.select(m.Job.status, m.fn.COUNT(m.Job.id)).where(m.Job.request == req)
        .group_by(m.Job.status).tuples())}
    return d


def shares_dirs(req, twin):
    # The LFN is never empty: equal LFNs are the shared choice (a separate test directory must differ).
    return twin.output_lfn == req.output_lfn
