"""Charts as inline SVG: the data (two queries), the geometry (bars, axes, labels) the template draws, and
the charts page."""
import datetime
from dataclasses import dataclass
from typing import Tuple

from flask import render_template

from shared.states import Status

from .. import models as m
from ..api.params import query_int
from ..counts import jobs_by_site
from . import bp

STATUS_COLOURS = {"prepared": "#9e9e9e", "submitted": "#64b5f6", "running": "#1565c0", "done": "#2e7d32",
                  "failed": "#c62828", "sys-failed": "#ef6c00", "timeout": "#6a1b9a"}
STATUS_ORDER = tuple(s.value for s in Status)
EVENTS_COLOUR = "#2e7d32"


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str            # the tooltip: what the bar stands for, with its number


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "start"


@dataclass(frozen=True)
class Chart:
    title: str
    width: float
    height: float
    bars: Tuple[Bar, ...]
    labels: Tuple[Label, ...]
    legend: Tuple[Tuple[str, str], ...] = ()   # (colour, name)


def events_by_day(days, today=None):
    """[(date, events of the jobs that ended done that day)] for the last `days` days, oldest first."""
    today = today or m.utcnow().date()
    first = today - datetime.timedelta(days=days - 1)
    day = m.fn.DATE(m.Job.finished_at)   # text on SQLite, a date on PostgreSQL: str() makes both ISO
    totals = {datetime.date.fromisoformat(str(d)[:10]): int(events or 0) for d, events in (
        m.Job.select(day, m.fn.SUM(m.Job.events))
        .where((m.Job.status == Status.DONE.value)
               & (m.Job.finished_at >= datetime.datetime.combine(first, datetime.time())))
        .group_by(day).tuples())}
    return [(first + datetime.timedelta(days=n), totals.get(first + datetime.timedelta(days=n), 0))
            for n in range(days)]


def site_status_chart(per_site):
    """Horizontal stacked bars, one per site, a segment per job status."""
    label_w, bar_w, row_h, top = 150, 520, 26, 10
    sites = sorted(per_site)
    most = max([sum(c.values()) for c in per_site.values()] or [1]) or 1
    bars, labels = [], []
    for row, site in enumerate(sites):
        y, x = top + row * row_h, label_w
        labels.append(Label(label_w - 8, y + 15, site, "end"))
        for status in STATUS_ORDER:
            count = per_site[site].get(status, 0)
            if count:
                width = max(bar_w * count / most, 1.0)
                bars.append(Bar(round(x, 1), y, round(width, 1), 18, STATUS_COLOURS[status],
                                f"{site}: {count} {status}"))
                x += width
        labels.append(Label(round(x + 6, 1), y + 15, str(sum(per_site[site].values()))))
    legend = tuple((STATUS_COLOURS[s], s) for s in STATUS_ORDER)
    return Chart("Jobs by status for each site", label_w + bar_w + 60, top + max(len(sites), 1) * row_h + 10,
                 tuple(bars), tuple(labels), legend)


def events_chart(per_day):
    """Vertical bars, one per day, with the largest value on the axis."""
    left, plot_w, plot_h, top = 70, 600, 180, 10
    most = max([n for _, n in per_day] or [1]) or 1
    step = plot_w / max(len(per_day), 1)
    bars, labels = [], [Label(left - 6, top + 5, f"{most:,}", "end"), Label(left - 6, top + plot_h, "0", "end")]
    for n, (day, events) in enumerate(per_day):
        x = left + n * step
        if events:
            height = max(plot_h * events / most, 1.0)
            bars.append(Bar(round(x + 1, 1), round(top + plot_h - height, 1), round(step - 2, 1),
                            round(height, 1), EVENTS_COLOUR, f"{day.isoformat()}: {events:,} events"))
        if n % max(len(per_day) // 6, 1) == 0:
            labels.append(Label(round(x + step / 2, 1), top + plot_h + 16, day.strftime("%m-%d"), "middle"))
    return Chart("Events produced per day", left + plot_w + 10, top + plot_h + 26, tuple(bars), tuple(labels))


@bp.get("/charts")
def charts_page():
    days = query_int("days", 30, lo=1, hi=366)
    return render_template("charts.html", days=days, status_chart=site_status_chart(jobs_by_site()),
                           events_chart=events_chart(events_by_day(days)))
