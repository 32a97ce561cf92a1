"""The project's shared package: the error table, the job description and event schemas."""
import inspect
import json

import pytest

from shared import errors, jobdesc, events, lifecycle
from shared.schema import SchemaError
from shared.states import Status, Step, FINAL_STATUSES
from tests.factories import job_description_dict


def test_every_error_code_is_unique_and_complete():
    codes = [row[0] for row in errors._TABLE]
    assert len(codes) == len(set(codes))
    for entry in errors.CODES.values():
        assert entry.status in {s.value for s in Status}
        assert entry.blame in {"payload", "site", "storage", "server", "wrapper", "manager"}
        assert entry.message


def test_every_exception_class_carries_a_code_of_the_table():
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, errors.SeverusError)]
    assert len(classes) > 20
    for cls in classes:
        assert cls.code in errors.CODES, cls


def test_contract_codes_have_their_statuses():
    expected = {0: "done", 1: "sys-failed", 3: "sys-failed", 30: "failed", 31: "failed",
                32: "timeout", 33: "failed", 34: "failed", 50: "sys-failed", 60: "sys-failed",
                62: "sys-failed", 99: "sys-failed", 100: "timeout"}
    for code, status in expected.items():
        assert errors.CODES[code].status == status
    for code in range(10, 16):
        assert errors.CODES[code].status == "sys-failed"


def test_one_line_message_names_code_and_detail():
    err = errors.SoftwareChecksumMismatch("expected 1a2b3c4d, got deadbeef")
    assert err.one_line() == ("E011 software tarball checksum mismatch: "
                              "expected 1a2b3c4d, got deadbeef")
    assert "\n" not in errors.WrapperError("a\nb").one_line()


def test_final_statuses_and_steps():
    assert FINAL_STATUSES == {Status.DONE, Status.FAILED, Status.SYS_FAILED, Status.TIMEOUT}
    assert [s.value for s in Step] == [f"RUNNING-0{i}" for i in range(1, 8)]
    assert Step.SOFTWARE.label == "copying software"


def test_contract_example_parses_and_round_trips():
    desc = jobdesc.parse_job_description(job_description_dict())
    assert desc.job.runnum == 10000003
    assert desc.payload.parameters["Geometry"] == "DG_4"
    assert desc.input.mode == "DIR"
    assert desc.limits.grace_s == 10.0
    again = jobdesc.parse_job_description(json.loads(json.dumps(desc.to_dict())))
    assert again == desc


@pytest.mark.parametrize("change, words", [
    ({"schema": 2}, "unknown schema 2"),
    ({"schema": None}, "unknown schema"),
    ({"job": {"runnum": "1"}}, "'job.runnum' must be an integer"),
    ({"job": {"events": True}}, "'job.events' must be an integer"),
    ({"job": {"events": 10 ** 30}}, "'job.events' must be between"),
    ({"job": {"attempt": 0}}, "'job.attempt' must be between"),
    ({"software": {"lfn": "lfn:/grid/../etc/passwd.tgz"}}, "must not contain '..'"),
    ({"software": {"lfn": "/grid/x.tgz"}}, "must be an LFN"),
    ({"software": {"lfn": "lfn:/grid/x.zip"}}, ".tjz, .tgz or .tar.gz"),
    ({"software": {"exe": "../../bin/sh"}}, "'software.exe' must be a relative path"),
    ({"software": {"workdir": "/abs"}}, "'software.workdir' must be a relative path"),
    ({"software": {"adler32": "XYZ"}}, "'software.adler32' has an invalid value"),
    ({"input": {"mode": "SOME"}}, "'input.mode' must be one of"),
    ({"input": {"mode": "FILE", "paths": []}}, "exactly one path in mode FILE"),
    ({"input": {"mode": "NONE", "paths": ["lfn:/a"]}}, "no paths in mode NONE"),
    ({"input": {"mode": "LIST", "paths": ["lfn:/a", "lfn:/b/../../c"]}}, "input.paths[1]"),
    ({"input": {"mode": "LIST", "paths": ["lfn:/a/x.root", "lfn:/b/y.root", "lfn:/c/x.root"]}},
     "'input.paths' hold lfn:/a/x.root and lfn:/c/x.root"),
    ({"output": {"patterns": ["../*.root"]}}, "output.patterns["),
    ({"output": {"patterns": []}}, "'output.patterns' must not be empty"),
    ({"payload": {"env": {"1BAD": "x"}}}, "not a valid environment variable name"),
    ({"payload": {"env": {"A": 1}}}, "'payload.env.A' must be a string"),
    ({"limits": {"max_wct_s": -5}}, "'limits.max_wct_s' must be between"),
    ({"limits": {"max_wct_s": float("inf")}}, "'limits.max_wct_s' must be a number"),
    ({"server": {"url": "ftp://x"}}, "'server.url' has an invalid value"),
    ({"surprise": 1}, "unknown field 'surprise'"),
    ({"job": {"id": 1, "extra": 2}}, "unknown field 'job.extra'"),
    ({"job": "nope"}, "'job' must be an object"),
])
def test_bad_descriptions_are_refused_with_one_clear_line(change, words):
    with pytest.raises(errors.JobDescriptionError) as info:
        jobdesc.parse_job_description(job_description_dict(**change))
    line = info.value.one_line()
    assert line.startswith("E001 bad job description: ")
    assert words in line
    assert "\n" not in line and "Traceback" not in line


def test_missing_section_is_named():
    data = job_description_dict()
    del data["software"]
    with pytest.raises(errors.JobDescriptionError, match="missing field 'software'"):
        jobdesc.parse_job_description(data)


def test_load_refuses_malformed_json(tmp_path):
    path = tmp_path / "job.json"
    path.write_text("{not json")
    with pytest.raises(errors.JobDescriptionError, match="is not valid JSON"):
        jobdesc.load_job_description(path)
    with pytest.raises(errors.JobDescriptionError, match="cannot read"):
        jobdesc.load_job_description(tmp_path / "absent.json")


def steps_dict(steps, **payload):
    """The CONTRACT example with `payload.steps` in place of its single module."""
    data = job_description_dict()
    data["payload"] = dict({"parameters": data["payload"]["parameters"], "env": {"BFROOT": "/opt/superb"},
                            "steps": steps}, **payload)
    return data


SIM_AND_DQ = [{"name": "sim", "module": "fastsim", "parameters": {"Geometry": "DG_5"}},
              {"name": "dq", "module": "dq", "args": ["bin/check-root", "--min-events", "1"],
               "env": {"DQ_LEVEL": "strict", "BFROOT": "/opt/dq"}}]


def test_a_job_of_steps_parses_and_each_step_gets_the_payload_settings_under_its_own():
    desc = jobdesc.parse_job_description(steps_dict(SIM_AND_DQ))
    assert desc.payload.module is None and [st.name for st in desc.payload.steps] == ["sim", "dq"]
    sim, dq = desc.payload.steps_to_run()
    assert (sim.module, sim.parameters["Geometry"], sim.parameters["Analysis"]) == ("fastsim", "DG_5",
                                                                                  "HadRecoilCocktail")
    assert sim.env == {"BFROOT": "/opt/superb"} and sim.args == ()
    assert dq.args == ("bin/check-root", "--min-events", "1")
    assert dq.env == {"BFROOT": "/opt/dq", "DQ_LEVEL": "strict"}     # the step's own wins
    again = jobdesc.parse_job_description(json.loads(json.dumps(desc.to_dict())))
    assert again == desc and "module" not in desc.to_dict()["payload"]


def test_a_single_module_job_is_one_step_named_after_its_module_and_keeps_its_shape():
    data = job_description_dict()
    desc = jobdesc.parse_job_description(data)
    (step,) = desc.payload.steps_to_run()
    assert (step.name, step.module, step.env) == ("fastsim", "fastsim", {"BFROOT": "/opt/superb"})
    assert step.parameters == data["payload"]["parameters"] and desc.payload.steps == ()
    assert desc.to_dict()["payload"] == dict(data["payload"], args=[])    # no `steps` key written


@pytest.mark.parametrize("steps, payload, words", [
    ([], {}, "'payload.steps' must hold 1 to 20 steps"),
    ([{"name": f"s{n}", "module": "generic"} for n in range(21)], {}, "must hold 1 to 20 steps"),
    ({"name": "sim"}, {}, "'payload.steps' must be a list of objects"),
    (["sim"], {}, "'payload.steps[0]' must be an object"),
    ([{"name": "sim", "module": "fastsim"}, {"name": "dq", "module": "no spaces"}], {},
     "'payload.steps[1].module' has an invalid value 'no spaces'"),
    ([{"name": "sim", "module": "fastsim"}, {"name": "dq"}], {}, "missing field 'payload.steps[1].module'"),
    ([{"module": "fastsim"}], {}, "missing field 'payload.steps[0].name'"),
    ([{"name": "x" * 65, "module": "fastsim"}], {}, "'payload.steps[0].name' is longer than 64"),
    ([{"name": "sim", "module": "fastsim"}, {"name": "sim", "module": "dq", "args": ["x"]}], {},
     "'payload.steps[1].name' 'sim' is an earlier step's name"),
    ([{"name": "sim", "module": "fastsim", "retries": 2}], {}, "unknown field 'payload.steps[0].retries'"),
    ([{"name": "sim", "module": "fastsim", "args": "-v"}], {}, "'payload.steps[0].args' must be a list"),
    ([{"name": "sim", "module": "fastsim", "parameters": {"Geometry": 4}}], {},
     "'payload.steps[0].parameters.Geometry' must be a string"),
    ([{"name": "sim", "module": "fastsim", "env": {"1BAD": "x"}}], {},
     "'payload.steps[0].env.1BAD' is not a valid environment variable name"),
    (SIM_AND_DQ, {"module": "fastsim"}, "'payload.module' and 'payload.steps' exclude each other"),
    (SIM_AND_DQ, {"args": ["-v"]}, "'payload.args' and 'payload.steps' exclude each other"),
])
def test_bad_steps_are_refused_with_one_line_naming_the_field(steps, payload, words):
    with pytest.raises(errors.JobDescriptionError) as info:
        jobdesc.parse_job_description(steps_dict(steps, **payload))
    line = info.value.one_line()
    assert line.startswith("E001 bad job description: ") and words in line, line
    assert "\n" not in line


def test_without_steps_the_module_is_still_required():
    data = job_description_dict()
    del data["payload"]["module"]
    with pytest.raises(errors.JobDescriptionError, match="missing field 'payload.module'"):
        jobdesc.parse_job_description(data)


def test_a_data_quality_failure_is_the_payloads_and_final():
    entry = errors.CODES[35]
    assert (entry.status, entry.blame, entry.retryable) == ("failed", "payload", False)
    err = errors.DataQualityFailed("step 2/2 dq (dq): exit code 1")
    assert isinstance(err, errors.PayloadError) and err.code == 35
    assert err.one_line() == "E035 data-quality check failed on the outputs: step 2/2 dq (dq): exit code 1"


def _event(**kw):
    base = {"attempt": 1, "seq": 1, "time": 1.7e9, "status": "running", "step": "RUNNING-02"}
    base.update(kw)
    return base


def test_events_parse_one_or_a_list():
    one = events.parse_events(_event())
    many = events.parse_events([_event(seq=1), _event(seq=2, kind="heartbeat",
                                                     metrics={"rss_mb": 10.5}, tail=["x"])])
    assert one[0].key == (1, 1)
    assert [e.seq for e in many] == [1, 2] and many[1].metrics == {"rss_mb": 10.5}


@pytest.mark.parametrize("change, words", [
    ({"status": "prepared"}, "'status' must be one of"),
    ({"step": "RUNNING-09"}, "'step' must be one of"),
    ({"seq": 0}, "'seq' must be between"),
    ({"status": "done", "kind": "final"}, "'code' is required"),
    ({"status": "done", "code": 0}, "'kind' final goes with a final status"),
    ({"kind": "final", "code": 0}, "'kind' final goes with a final status"),
    ({"status": "failed", "kind": "final", "code": 555}, "not a known error code"),
    ({"metrics": {"x": "y"}}, "'metrics.x' must be a number"),
    ({"tail": "line"}, "'tail' must be a list of strings"),
    ({"bogus": 1}, "unknown field 'bogus'"),
])
def test_bad_events_are_refused(change, words):
    with pytest.raises(SchemaError, match=words.replace("(", r"\(").replace(".", r"\.")):
        events.parse_events(_event(**change))


def test_event_batches_are_bounded():
    with pytest.raises(SchemaError, match="empty list"):
        events.parse_events([])
    with pytest.raises(SchemaError, match="more than 1000"):
        events.parse_events([_event(seq=i + 1) for i in range(1001)])
    with pytest.raises(SchemaError, match=r"\[1\]\.seq"):
        events.parse_events([_event(), _event(seq="2")])


# The life cycle of CONTRACT §8 written out by hand, pair by pair: (from, trigger) -> where it may go.
# Anything not listed must be refused. The table in shared/lifecycle.py must say exactly this.
EXPECTED_MOVES = {
    ("prepared", "submit"): {"submitted"},
    ("prepared", "report"): {"running"}, ("submitted", "report"): {"running"}, ("running", "report"): {"running"},
    ("prepared", "finish"): {"done", "failed", "sys-failed", "timeout"},
    ("submitted", "finish"): {"done", "failed", "sys-failed", "timeout"},
    ("running", "finish"): {"done", "failed", "sys-failed", "timeout"},
    ("prepared", "kill"): {"sys-failed"}, ("submitted", "kill"): {"submitted"}, ("running", "kill"): {"running"},
    ("failed", "resubmit"): {"prepared"}, ("sys-failed", "resubmit"): {"prepared"},
    ("timeout", "resubmit"): {"prepared"},
    # the server's own resubmit, an automatic retry (issue 15, server/retries.py)
    ("failed", "retry"): {"prepared"}, ("sys-failed", "retry"): {"prepared"}, ("timeout", "retry"): {"prepared"},
    ("running", "reap"): {"timeout"},
    ("submitted", "batch-end"): {"sys-failed"}, ("running", "batch-end"): {"sys-failed"},
    ("submitted", "batch-start"): {"running"},
}


@pytest.mark.parametrize("trigger", [t.value for t in lifecycle.Trigger])
def test_the_life_cycle_table_allows_exactly_the_contract_moves_for_every_pair_of_states(trigger):
    for status in Status:
        for to in Status:
            allowed = to.value in EXPECTED_MOVES.get((status.value, trigger), set())
            if allowed:
                assert lifecycle.move(status, trigger, to) == to.value
            else:
                with pytest.raises(lifecycle.IllegalTransition) as refused:
                    lifecycle.move(status, trigger, to)
                assert str(status.value) in str(refused.value) and trigger in str(refused.value)
        assert lifecycle.may(status, trigger) == ((status.value, trigger) in EXPECTED_MOVES)


def test_no_trigger_leaves_a_final_status_but_resubmit_and_retry_and_none_leaves_done():
    for status in FINAL_STATUSES:
        movers = [t for t in lifecycle.Trigger if lifecycle.may(status, t)]
        assert movers == ([] if status == Status.DONE else [lifecycle.Trigger.RESUBMIT, lifecycle.Trigger.RETRY])


def test_an_event_may_acknowledge_a_command_and_nothing_else():
    base = {"attempt": 1, "seq": 1, "time": 1.0, "status": "running", "kind": "info"}
    assert events.parse_event(dict(base, ack="kill")).ack == "kill"
    with pytest.raises(SchemaError, match="ack"):
        events.parse_event(dict(base, ack="reboot"))


def test_a_code_that_cannot_succeed_on_a_retry_is_not_retryable():
    """The reviewed flags (issue 12): retrying what the attempt already exhausted, what the job or
    its data get wrong, what the payload or a person decided cannot succeed."""
    cannot = {1: "bad description", 10: "every replica tried: none found",
              11: "every replica tried: all differ from the job's checksum", 13: "hostile tarball",
              14: "release without its exe", 20: "every replica tried: none found",
              21: "every replica tried: all differ", 30: "payload's exit", 31: "payload's signal",
              32: "payload's wallclock", 33: "payload's memory", 34: "payload stalled",
              35: "the outputs failed the job's own data-quality check",
              42: "payload wrote no outputs", 44: "the LFN is another job's", 61: "another attempt owns the job",
              62: "a manager killed it"}
    for code, why in cannot.items():
        assert errors.CODES[code].retryable is False, (code, why)
    cannot[6] = "the job's own credential: the next attempt carries the same"
    # the site, the storage or the server of the day; a credential the node or its SE got wrong (another
    # site, or the same after its agent renewed it, may succeed)
    transient = (2, 3, 4, 5, 7, 12, 15, 16, 17, 22, 23, 40, 41, 43, 45, 50, 51, 60, 100)
    for code in transient:
        assert errors.CODES[code].retryable is True, code
    assert set(errors.CODES) - {0, 99} == set(cannot) | set(transient)   # every code reviewed
