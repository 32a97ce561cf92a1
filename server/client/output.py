"""What `sbk`'s commands print: tables, key-value pairs, JSON, CSV, progress.

`--output table` (the default): on a terminal, rich tables coloured by status and a
real progress bar; piped, the same columns as plain aligned text (stable for grep
and awk) and no progress at all. `--output json`: the server's JSON. `--output csv`:
each table of the human output as CSV (a show command's fields as `field,value`
rows first), tables separated by an empty line; free text lines are left out.
"""
import contextlib
import csv
import json
import sys

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

MODES = ("table", "json", "csv")

# Colours of job, request and production statuses on a terminal (the first word of a cell).
STATUS_STYLES = {"done": "green", "failed": "red", "sys-failed": "red", "timeout": "magenta",
                 "running": "cyan", "submitted": "blue", "prepared": "yellow",
                 "open": "yellow", "valid": "cyan", "closed": "dim"}


class Output:
    """One command's output in one mode; `terminal` (default: whether the stream is a tty) picks
    rich for people or plain text for pipes."""

    def __init__(self, mode="table", stream=None, err=None, terminal=None):
        if mode not in MODES:
            raise ValueError(f"output mode {mode!r} (one of {', '.join(MODES)})")
        self.mode = mode
        self.stream = stream or sys.stdout
        self.err = err or sys.stderr
        self.terminal = _isatty(self.stream) if terminal is None else terminal
        self.live = (_isatty(self.err) if terminal is None else terminal) and mode == "table"
        self._csv_tables = 0

    @property
    def as_json(self):
        return self.mode == "json"

    def _console(self, file):
        return Console(file=file, force_terminal=True, highlight=False, soft_wrap=False,
                       width=None if _isatty(file) else 160)

    # -- data

    def json(self, data):
        print(json.dumps(data, indent=2, sort_keys=False), file=self.stream)

    def line(self, text=""):
        if self.mode != "csv":
            print(text, file=self.stream)

    def table(self, columns, rows, empty="(none)"):
        """`columns` are (header, key or function); numbers align right."""
        headers = [h for h, _ in columns]
        cells = [[_cell(get(r) if callable(get) else r.get(get)) for _, get in columns] for r in rows]
        if self.mode == "csv":
            return self._csv(headers, [[("" if c == "-" else c) for c in row] for row in cells])
        if not cells:
            return self.line(empty)
        numeric = [all(_numeric(c[i]) for c in cells) for i in range(len(columns))]
        if self.terminal:
            return self._rich_table(headers, cells, numeric)
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

        def fmt(values):
            return "  ".join(v.rjust(w) if num else v.ljust(w)
                             for v, w, num in zip(values, widths, numeric)).rstrip()

        self.line(fmt(headers))
        for c in cells:
            self.line(fmt(c))

    def pairs(self, items):
        if self.mode == "csv":
            return self._csv(["field", "value"], [[k, "" if v is None else _cell(v)] for k, v in items])
        width = max(len(k) for k, _ in items)
        for key, value in items:
            text = _cell(value)
            if self.terminal and key == "status":
                self._console(self.stream).print(f"{escape(key + ':'):<{width + 1}} {_styled(text)}")
            else:
                self.line(f"{key + ':':<{width + 1}} {text}")

    def _csv(self, headers, rows):
        if self._csv_tables:
            print(file=self.stream)
        self._csv_tables += 1
        writer = csv.writer(self.stream, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(rows)

    def _rich_table(self, headers, cells, numeric):
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
        for header, num in zip(headers, numeric):
            # long cells fold onto more lines rather than lose their ends to an ellipsis
            table.add_column(escape(header), justify="right" if num else "left", overflow="fold")
        status_columns = {i for i, h in enumerate(headers) if h.lower() == "status"}
        for row in cells:
            table.add_row(*[_styled(c) if i in status_columns else escape(c) for i, c in enumerate(row)])
        self._console(self.stream).print(table)

    # -- progress (stderr, on a terminal only)

    def progress(self, text):
        """A step line on a terminal; nothing when piped or for JSON and CSV."""
        if self.live:
            print(f"» {text}", file=self.err, flush=True)

    @contextlib.contextmanager
    def progress_bar(self, description, total):
        """A rich progress bar on stderr when on a terminal, nothing otherwise; yields `update(done, text=None)`."""
        if not self.live:
            yield lambda done, text=None: None
            return
        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=self._console(self.err), transient=False)
        with bar:
            task = bar.add_task(description, total=total)

            def update(done, text=None):
                bar.update(task, completed=done, **({"description": text} if text else {}))

            yield update


def _styled(text):
    style = STATUS_STYLES.get(text.split(" ", 1)[0].rstrip(","))
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _cell(value):
    """A value as table text: None '-', booleans yes/no, floats with two decimals, lists by commas."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def _numeric(text):
    if text in ("", "-"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def counts(numbers, order=None):
    """{"open": 1, "valid": 0} as "1 open, 0 valid"."""
    keys = order or sorted(numbers)
    return ", ".join(f"{numbers.get(k, 0)} {k}" for k in keys if numbers.get(k, 0) or order)
