"""jobs._event_rows writes the event columns out by hand (the ingest hot path): the values must be
what each field's own db_value makes of the parsed events, column for column."""
from server import jobs
from shared.events import parse_events

BODY = [
    {"attempt": 2, "seq": 7, "time": 1700000000, "status": "running", "kind": "heartbeat",
     "metrics": {"rss_mb": 812.5, "cpu_s": 33, "b": 1}},
    {"attempt": 2, "seq": 8, "time": 1700000001.25, "status": "running", "kind": "step", "step": "RUNNING-03",
     "message": "staging in", "tail": ["line 1", "lïne 2"]},
    {"attempt": 2, "seq": 9, "time": 1700000002.5, "status": "failed", "kind": "final", "code": 30,
     "message": "payload failed", "metrics": {"wct_s": 12.0}},
]


def test_rows_are_what_the_fields_make_of_the_events():
    events = parse_events(BODY)
    rows = jobs._event_rows(41, events)
    received = rows[0][4]
    expected = [[f.db_value(v) for f, v in zip(jobs.EVENT_FIELDS, (
        41, e.attempt, e.seq, e.time, received, e.status, e.kind, e.step, e.message, e.code,
        dict(e.metrics) or None, list(e.tail) or None))] for e in events]
    assert rows == expected
    assert [type(v) for v in rows[0]] == [type(v) for v in expected[0]]
    assert rows[0][10] == '{"b":1,"cpu_s":33,"rss_mb":812.5}' and rows[0][11] is None
    assert rows[1][10] is None and rows[1][11] == '["line 1","l\\u00efne 2"]'
