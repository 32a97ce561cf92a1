"""server/client/output.py and `--output table|json|csv`: plain when piped, rich on a terminal, a real
progress bar; the commands run by `sbk`'s own parser against the real app (in-process)."""
import argparse
import csv
import io
import json
import re

import pytest

from server import cli
from server.client import cli as client_commands
from server.client.jobs import wait_handed_over
from server.client.output import Output

from .conftest import event, submit
from .inprocess import in_process

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run(api, argv, terminal=False):
    """`sbk ARGV` parsed by sbk's parser, run over the in-process client: (stdout, stderr)."""
    args = cli.build_parser().parse_args(argv)
    stream, err = io.StringIO(), io.StringIO()
    args.handler(in_process(api), Output(args.output, stream, err, terminal=terminal or None), args)
    return stream.getvalue(), err.getvalue()


def done_and_prepared(api, production):
    """Two jobs: one done, one prepared; their ids."""
    done, prepared = submit(api, production, runs=2)["job_ids"]
    token = api.post(f"/jobs/{done}/token").json["server"]["token"]
    assert api.as_(token).post(f"/jobs/{done}/events", json=[event(1), event(2, "done", code=0)]).status_code == 200
    return done, prepared


def test_sites_as_table_json_and_csv(api, production):
    table, _ = run(api, ["site", "list"])
    lines = table.splitlines()
    assert lines[0].split()[:5] == ["site", "prepared", "running", "failed", "bunch"]
    assert re.match(r"INFN-T1\s+\d+\s+\d+\s+\d+\s+5\s", lines[1]) and "\x1b[" not in table
    as_json, _ = run(api, ["site", "list", "--json"])
    assert [s["name"] for s in json.loads(as_json)] == ["INFN-T1", "INFN-TORINO"]
    assert run(api, ["site", "list", "--output", "json"])[0] == as_json
    rows = list(csv.reader(io.StringIO(run(api, ["site", "list", "-o", "csv"])[0])))
    assert rows[0] == ["site", "prepared", "running", "failed", "bunch", "se", "last submission", "description"]
    assert [r[0] for r in rows[1:]] == ["INFN-T1", "INFN-TORINO"] and rows[1][4] == "5"


def test_a_show_command_as_csv_gives_its_fields_then_its_tables(api, production):
    text, _ = run(api, ["site", "show", "INFN-T1", "--output", "csv"])
    fields, sessions, productions = text.split("\n\n")
    rows = list(csv.reader(io.StringIO(fields)))
    assert rows[0] == ["field", "value"] and ["bunch dimension", "5"] in rows
    assert next(csv.reader(io.StringIO(sessions))) == ["session", "enabled", "supported"]
    assert next(csv.reader(io.StringIO(productions))) == ["production", "allowed", "last submission", "by"]


def test_jobs_as_csv_keep_the_tables_columns_and_leave_out_the_text(api, production):
    done, prepared = done_and_prepared(api, production)
    rows = list(csv.reader(io.StringIO(run(api, ["jobs", "--sort", "id", "-o", "csv"])[0])))
    assert rows[0] == ["id", "runnum", "events", "Analysis", "Generator", "Geometry", "Background", "status",
                       "step", "gjid", "site", "wct (s)"]
    assert [(int(r[0]), r[7]) for r in rows[1:]] == [(done, "done"), (prepared, "prepared")]
    assert not any("jobs found" in ",".join(r) for r in rows)
    plain, _ = run(api, ["jobs", "--sort", "id"])
    assert "2 jobs found matching the search criteria" in plain


@pytest.fixture()
def colour_terminal(monkeypatch):
    """A terminal that shows colours, whatever the machine running the tests says."""
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)


def test_on_a_terminal_tables_are_rich_and_coloured_by_status(api, production, colour_terminal):
    done_and_prepared(api, production)
    text, _ = run(api, ["jobs", "--sort", "id"], terminal=True)
    assert "\x1b[32mdone" in text and "\x1b[33mprepared" in text   # green, yellow
    plain = ANSI.sub("", text)
    assert re.search(r"id\s+runnum\s+events\s+Analysis", plain) and "───" in plain   # rich's header rule
    assert "2 jobs found matching the search criteria" in plain


def test_every_listing_and_show_command_takes_output_and_json():
    parser = cli.build_parser()
    for argv in (["me"], ["session", "list"], ["session", "show", "S"], ["software", "list"],
                 ["production", "list"], ["production", "show", "P"], ["request", "list"], ["request", "show", "1"],
                 ["site", "list"], ["site", "show", "S"], ["jobs"], ["job", "1"], ["stats"], ["activities"],
                 ["token", "list"]):
        assert parser.parse_args(argv).output == "table"
        assert parser.parse_args(argv + ["--json"]).output == "json", argv
        assert parser.parse_args(argv + ["-o", "csv"]).output == "csv", argv
    with pytest.raises(SystemExit) as caught:
        parser.parse_args(["jobs", "--output", "yaml"])
    assert caught.value.code == 2


def test_the_progress_bar_on_a_terminal_and_nothing_when_piped(colour_terminal):
    err = io.StringIO()
    out = Output(err=err, terminal=True)
    with out.progress_bar("handed to the backend", 3) as update:
        for done in range(4):
            update(done)
    shown = ANSI.sub("", err.getvalue())
    assert "handed to the backend" in shown and "3/3" in shown and "━" in shown
    piped = io.StringIO()
    with Output(err=piped).progress_bar("handed to the backend", 3) as update:
        update(3)
    assert piped.getvalue() == ""
    assert Output("json", err=io.StringIO(), terminal=True).live is False   # JSON and CSV: no progress


def test_waiting_for_the_backend_shows_the_jobs_handed_over(api, production, colour_terminal):
    ids = submit(api, production, runs=2)["job_ids"]
    err = io.StringIO()
    # no backend takes them here: still prepared at the deadline, the bar says so
    assert wait_handed_over(in_process(api), Output(err=err, terminal=True), ids, timeout=0) == 2
    assert "0/2" in ANSI.sub("", err.getvalue())


def test_resubmit_wait_needs_a_backend(api, production):
    args = cli.build_parser().parse_args(["resubmit", "1", "--wait", "10"])
    err = io.StringIO()
    assert client_commands.run(argparse.Namespace(**dict(vars(args), url="http://sbk.test", token="t")),
                               io.StringIO(), err) == client_commands.EXIT_USAGE
    assert err.getvalue() == "sbk resubmit: --wait waits for a backend: give --backend as well\n"
