"""`make bench-scale`'s smoke run (issue 17): the whole soak at small sizes, ~40 s.

A real PostgreSQL, gunicorn with contrib/gunicorn.conf.py, wrk posting heartbeats, steps, finals and
starts, managers paging: the run must reach its rate with no error and every acknowledged event
stored. Its latency and CPU goals are printed, not asserted here: on a shared 2-core machine they
measure the neighbours (`make bench-scale` is where they count).
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parent.parent


def test_a_small_soak_stores_every_acknowledged_event_without_an_error():
    run = subprocess.run([sys.executable, "-m", "bench.bench_scale", "--jobs", "20000", "--running", "6000",
                          "--seconds", "20", "--heartbeat-s", "60", "--managers", "4", "--think-s", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=170)
    out = run.stdout
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    rows = dict(re.findall(r"^  (\S[^\n]*?\S) {2,}\S[^\n]*? (yes|NO)$", out, re.M))
    assert set(rows) == {"p99 of event posts", "p99 of pages", "errors (posts, pages, server log)", "events/s",
                         "gunicorn + PostgreSQL CPU", "acknowledged events stored"}, out
    for measure in ("errors (posts, pages, server log)", "events/s", "acknowledged events stored"):
        assert rows[measure] == "yes", out
    acked, stored = (int(n.replace(",", "")) for n in re.search(r"([\d,]+) acked, ([\d,]+) stored", out).groups())
    assert 0.9 * 20 * (6000 / 60) <= acked <= stored, out     # ~100 heartbeats a second for 20 s
    # the exit status is the goals' verdict: 1 exactly when a row says NO
    assert run.returncode == (1 if "NO" in rows.values() else 0), out
