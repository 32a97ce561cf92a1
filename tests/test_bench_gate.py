"""bench/gate.py: what "met" means for each kind of goal, quick runs at half, the summary table,
the busy-machine warning and the rows handed from a benchmark to `python -m bench` (not timed)."""
import json

import pytest

from bench import gate


@pytest.mark.parametrize("kind, bound, ours, ref, met", [
    (">=", 0.97, 98.0, 100.0, True),      # ingest: 0.98 of raw
    (">=", 0.97, 96.0, 100.0, False),
    ("<=", 1.5, 15.0, 10.0, True),        # monitor: 1.5x raw exactly
    ("<=", 1.5, 15.1, 10.0, False),
    ("over", 0.15, 0.30, 0.16, True),     # wrapper start: 0.14 s later than bare
    ("over", 0.15, 0.32, 0.16, False),
    ("max", 40.0, 39.0, 13.0, True),      # peak RSS: its own scale, reference shown
    ("max", 40.0, 41.0, 13.0, False),
    (">=", 1.0, None, 100.0, False),      # nothing measured is never met
    (">=", 1.0, 100.0, 0.0, False),       # nor a ratio to nothing
])
def test_goal_met(kind, bound, ours, ref, met):
    assert gate.Goal(kind, bound).met(ours, ref) is met


def test_quick_relaxes_every_goal_to_half_and_says_so():
    assert gate.Goal(">=", 1.2, quick=True).effective == pytest.approx(0.6)
    assert gate.Goal("<=", 1.5, quick=True).effective == 3.0
    assert gate.Goal("over", 0.15, quick=True).effective == 0.3
    assert gate.Goal("max", 40, quick=True).effective == 80
    assert gate.Goal(">=", 1.2, quick=True).met(70, 100)
    assert not gate.Goal(">=", 1.2).met(70, 100)
    assert "relaxed: quick" in gate.Goal(">=", 1.2, quick=True).describe()
    assert "quick" not in gate.Goal(">=", 1.2).describe()


def test_a_known_gap_is_gated_in_quick_runs_at_half_its_recorded_figure_and_only_there(monkeypatch):
    """A goal not met yet (QUICK_GAPS): a quick run fails only when the path got twice as slow as
    recorded; the full run holds the goal as stated."""
    slow = gate.Goal("<=", 1.5, quick=True, gap=40.0)
    assert slow.effective == 80.0 and slow.met(70, 1) and not slow.met(90, 1)
    assert "known gap" in slow.describe() and "goal 1.5" in slow.describe()
    assert gate.Goal(">=", 0.9, quick=True, gap=0.6).effective == pytest.approx(0.3)
    assert gate.Goal(">=", 0.9, quick=True, gap=1.2).effective == pytest.approx(0.45)   # met: half the goal
    monkeypatch.setitem(gate.QUICK_GAPS, "bench_x: page", 40.0)
    quick, full = gate.Gate("bench_x", quick=True), gate.Gate("bench_x")
    assert quick.add("page 1 (worst: text)", 60.0, 1.0, ("<=", 1.5))     # a row starting with the key
    assert not full.add("page 1 (worst: text)", 60.0, 1.0, ("<=", 1.5))
    assert not quick.add("page 1 (worst: site)", 90.0, 1.0, ("<=", 1.5))
    assert quick.add("other", 2.0, 1.0, ("<=", 1.5))                      # no gap: half the goal


def test_unknown_kind_refused():
    with pytest.raises(ValueError):
        gate.Goal("==", 1.0)


def test_best_of_n_and_spread():
    g = gate.Gate("bench_x")
    assert g.add("rate", [90.0, 100.0, 80.0], [100.0, 95.0], (">=", 1.0), unit="ev/s")   # best: 100 vs 100
    assert not g.add("time", [3.0, 2.0], [1.0, 1.5], ("<=", 1.5), unit="s")              # best: 2 vs 1
    rate, time_row = g.rows
    assert (rate.ours, rate.reference, rate.ratio, rate.repeats) == (100.0, 100.0, 1.0, 3)
    assert rate.spread_ours == pytest.approx(25.0) and rate.spread_reference == pytest.approx(100 * 5 / 95)
    assert (time_row.ours, time_row.reference, time_row.ratio) == (2.0, 1.0, 2.0)


def test_finish_fails_on_a_missed_goal_and_hands_rows_to_the_runner(tmp_path, monkeypatch, capsys):
    results = tmp_path / "rows.jsonl"
    monkeypatch.setenv(gate.RESULTS_ENV, str(results))
    ok = gate.Gate("bench_a")
    ok.add("fast path", 10.0, 10.0, (">=", 0.9))
    ok.check("nothing lost", True, "5 acknowledged, 5 stored")
    assert ok.finish() == 0
    bad = gate.Gate("bench_b", quick=True)
    bad.add("slow path", 4.0, 10.0, (">=", 1.0))   # 0.4 < 0.5 even at half
    assert bad.finish() == 1
    assert gate.Gate("bench_c").finish() == 1       # a benchmark that measured nothing fails
    rows = gate.read_rows(str(results))
    assert [(r.bench, r.met) for r in rows] == [("bench_a", True), ("bench_a", True), ("bench_b", False)]
    assert json.loads(results.read_text().splitlines()[0])["measure"] == "fast path"
    out = capsys.readouterr().out
    assert "bench_b: 0 of 1 goals met" in out


def test_table_columns_and_margin():
    g = gate.Gate("bench_w")
    g.add("start", 0.30, 0.10, ("over", 0.15), unit="s")
    g.add("ingest", 97.0, 100.0, (">=", 0.97), unit="ev/s")
    g.check("stored", False, "3 acknowledged, 2 stored")
    text = gate.table(g.rows).splitlines()
    assert text[0].split()[:6] == ["measure", "ours", "reference", "ratio", "goal", "met"]
    start, ingest, stored = text[2:]
    assert "+0.2 s" in start and "NO" in start
    assert "0.97" in ingest and "yes" in ingest
    assert "3 acknowledged, 2 stored" in stored and "NO" in stored


@pytest.mark.parametrize("load, busy", [(0.5, False), (1.5, True)])
def test_busy_machine_said_on_the_first_line(monkeypatch, capsys, load, busy):
    monkeypatch.setattr(gate.os, "getloadavg", lambda: (load, 0.4, 0.3))
    gate.Gate("bench_l").start()
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("bench_l (full)")
    assert ("BUSY MACHINE" in first) is busy
