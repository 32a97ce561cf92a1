"""A job stages its LIST inputs by file name (issue 18 item 1): a submission that would give one job two
inputs of one name is refused with a 400 naming both, on SQLite and PostgreSQL; split apart they are fine."""
from .test_split import IN, bulk_submit, split_request

CLASH = [f"{IN}/a/same.root", f"{IN}/b/other.root", f"{IN}/c/same.root"]


def test_an_unsplit_list_request_with_two_inputs_of_one_name_is_refused_naming_both(api, production):
    request_id = split_request(api, production, "Clash", paths=CLASH, files_per_job=0)
    for dry_run in (True, False):
        reply = bulk_submit(api, request_id, status=400, dry_run=dry_run, runs=1)
        assert CLASH[0] in reply["message"] and CLASH[2] in reply["message"], reply
        assert "\n" not in reply["message"]
    assert api.get(f"/requests/{request_id}").json["jobs"] == {}


def test_a_test_bulk_whose_own_input_paths_share_a_name_is_refused(api, production):
    bulk = {"test": True, "sites": ["INFN-T1"], "runs": 1, "events": 5, "output_sites": ["INFN-T1"],
            "parameters": {"Analysis": "Generics", "Generator": "Clash2", "Geometry": "DG_4", "Background": "none"},
            "input_mode": "LIST", "input_paths": CLASH}
    r = api.post("/submissions", json={"production": production["production"], "bulks": [bulk]})
    assert r.status_code == 400, r.json
    assert CLASH[0] in r.json["message"] and CLASH[2] in r.json["message"]


def test_the_same_inputs_split_into_different_jobs_are_accepted(api, production):
    request_id = split_request(api, production, "Apart", paths=CLASH, files_per_job=0)
    plan = bulk_submit(api, request_id, split=[[CLASH[0], CLASH[1]], [CLASH[2]]])
    assert len(plan["job_ids"]) == 2
