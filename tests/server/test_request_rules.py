"""Issue 13's request and production rules: a production's twin follows it, requests are deleted while they
have no jobs, output sites are known sites, a test request's output directories are an explicit choice, and
the note holds at most 255 characters."""
import threading


from .conftest import Api, new_token, submit

LFN = "lfn:/grid/superbvo.org/production/FastSim/2010_July/output/HadRecoilCocktail/DG_4/B0B0bar_SL"
TEST_LFN = LFN.replace("/2010_July/", "/2010_July_test/")


def new_request(api, production, **changes):
    """POST /requests importing the fixture's request with another Generator (so it is no duplicate)."""
    body = {"production": production["production"], "from": production["request"]["id"],
            "parameters": dict(production["request"]["parameters"], Generator=changes.pop("generator", "other"))}
    body.update(changes)
    return api.post("/requests", json=body)


def test_bench_style_request_is_refused_naming_the_way_out(api, production):
    """Before issue 13 this request's test twin silently wrote into lfn:/grid/x/out."""
    r = new_request(api, production, output_lfn="lfn:/grid/x/out")
    assert r.status_code == 400
    assert "2010_July" in r.json["message"] and "test_output_lfn" in r.json["message"] \
        and "same_output_dirs" in r.json["message"]


# ------------------------------------------------------------------ 1. a production's twin follows it

def test_closing_a_production_closes_its_twin_and_opening_opens_both(api, production):
    assert api.patch("/productions/2010_July", json={"status": "closed"}).status_code == 200
    assert api.get("/productions/2010_July_test").json["status"] == "closed"
    r = api.post("/submissions", json={"production": "2010_July", "bulks": [
        {"request": production["request"]["id"], "test": True, "sites": ["INFN-T1"], "runs": 1, "events": 1}]})
    assert r.status_code == 409 and r.json["error"] == "production-closed"
    assert api.patch("/productions/2010_July", json={"status": "open"}).status_code == 200
    assert api.get("/productions/2010_July_test").json["status"] == "open"
    submit(api, production, runs=1, test=True)


def test_a_twin_status_is_set_through_its_main_production(api, production):
    r = api.patch("/productions/2010_July_test", json={"status": "closed"})
    assert r.status_code == 400 and "2010_July" in r.json["message"]
    assert api.get("/productions/2010_July_test").json["status"] == "open"
    assert api.patch("/productions/2010_July_test", json={"note": "tests only"}).json["note"] == "tests only"


# ------------------------------------------------------------------ 2. DELETE /requests/<id>

def test_a_request_without_jobs_goes_with_its_test_request(api, production):
    made = new_request(api, production).json
    r = api.delete(f"/requests/{made['id']}")
    assert r.status_code == 200, r.json
    assert r.json == {"deleted": [made["id"], made["test_request"]], "test_request_kept": None}
    assert api.get(f"/requests/{made['id']}").status_code == 404
    assert api.get(f"/requests/{made['test_request']}").status_code == 404
    assert api.delete(f"/requests/{made['id']}").status_code == 404
    assert new_request(api, production).status_code == 201          # its parameters are free again


def test_a_request_with_jobs_is_not_deleted(api, production):
    submit(api, production, runs=2)
    r = api.delete(f"/requests/{production['request']['id']}")
    assert r.status_code == 409 and r.json["error"] == "request-has-jobs"
    assert "2 jobs" in r.json["message"]
    assert api.get(f"/requests/{production['request']['id']}").status_code == 200


def test_a_test_request_with_jobs_stays_when_its_main_request_goes(api, production):
    made = new_request(api, production).json
    submit(api, {**production, "request": made}, runs=1, test=True)
    r = api.delete(f"/requests/{made['id']}")
    assert r.status_code == 200 and r.json == {"deleted": [made["id"]], "test_request_kept": made["test_request"]}
    kept = api.get(f"/requests/{made['test_request']}").json
    assert kept["production"] == "2010_July_test" and sum(kept["jobs"].values()) == 1
    again = new_request(api, production).json                  # the same parameters adopt the kept one
    assert again["test_request"] == made["test_request"]


def test_a_linked_test_request_is_deleted_only_with_its_main_request(api, production):
    made = new_request(api, production).json
    r = api.delete(f"/requests/{made['test_request']}")
    assert r.status_code == 409 and r.json["error"] == "test-request" and str(made["id"]) in r.json["message"]
    assert api.get(f"/requests/{made['id']}").json["test_request"] == made["test_request"]


def test_requests_of_a_closed_production_are_not_deleted(api, production):
    made = new_request(api, production).json
    api.patch("/productions/2010_July", json={"status": "closed"})
    r = api.delete(f"/requests/{made['id']}")
    assert r.status_code == 409 and r.json["error"] == "production-closed"


def test_deleting_needs_the_privilege_to_create_requests(api, production, client):
    made = new_request(api, production).json
    for name, group in (("watcher", "webui"), ("shifter", "Shift")):
        r = Api(client, new_token(name, [group])).delete(f"/requests/{made['id']}")
        assert r.status_code == 403, name
    manager = Api(client, new_token("manager", ["FastProdMgr"]))
    assert manager.delete(f"/requests/{made['id']}").status_code == 200


def test_a_deletion_racing_a_submission_leaves_no_job_without_its_request(app, api, production):
    """The submission either prepares its job first (the deletion is 409) or finds no request (404)."""
    for round_ in range(3):
        made = new_request(api, production, generator=f"race{round_}").json
        assert api.patch(f"/requests/{made['id']}", json={"status": "valid"}).status_code == 200
        barrier, codes = threading.Barrier(2), {}

        def call(kind):
            client = Api(app.test_client(), api.token)
            barrier.wait()
            if kind == "delete":
                codes[kind] = client.delete(f"/requests/{made['id']}").status_code
            else:
                codes[kind] = client.post("/submissions", json={"production": "2010_July", "bulks": [
                    {"request": made["id"], "sites": ["INFN-T1"], "runs": 1, "events": 1}]}).status_code

        threads = [threading.Thread(target=call, args=(kind,)) for kind in ("delete", "submit")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert codes in ({"delete": 409, "submit": 201}, {"delete": 200, "submit": 404}), codes
        jobs = api.get("/jobs", query_string={"request": str(made["id"])}).json["jobs"]
        assert len(jobs) == (1 if codes["submit"] == 201 else 0)


# ------------------------------------------------------------------ 3. output sites are known sites

def test_unknown_output_sites_are_refused_on_create_and_modify(api, production):
    r = new_request(api, production, output_sites=["INFN-T1", "NOWHERE", "ELSEWHERE"])
    assert r.status_code == 400 and "NOWHERE" in r.json["message"] and "ELSEWHERE" in r.json["message"]
    made = new_request(api, production, output_sites=["INFN-T1", "INFN-TORINO"]).json
    r = api.patch(f"/requests/{made['id']}", json={"output_sites": ["NOWHERE"]})
    assert r.status_code == 400 and "NOWHERE" in r.json["message"]
    assert api.get(f"/requests/{made['id']}").json["output_sites"] == ["INFN-T1", "INFN-TORINO"]
    assert api.patch(f"/requests/{made['id']}", json={"output_sites": ["INFN-TORINO"]}).status_code == 200


# ------------------------------------------------------------------ 4. the test request's output directories

def twin_of(api, req):
    return api.get(f"/requests/{req['test_request']}").json


def test_by_default_the_test_directories_replace_the_production_segment(api, production):
    made = new_request(api, production, output_lfn=LFN, output_abs="/storage/prod/2010_July/out").json
    twin = twin_of(api, made)
    assert twin["output_lfn"] == TEST_LFN and twin["output_abs"] == "/storage/prod/2010_July_test/out"
    assert made["same_output_dirs"] is False and made["test_output_lfn"] == TEST_LFN
    # the name as the last segment is a segment too; a longer name holding it is not
    made = new_request(api, production, generator="last", output_lfn="lfn:/grid/vo/2010_July").json
    assert twin_of(api, made)["output_lfn"] == "lfn:/grid/vo/2010_July_test"
    r = new_request(api, production, generator="longer", output_lfn="lfn:/grid/vo/2010_July_v2/out")
    assert r.status_code == 400


def test_a_directory_without_the_production_segment_needs_an_explicit_choice(api, production):
    r = new_request(api, production, output_lfn="lfn:/grid/vo/flat/out")
    assert r.status_code == 400 and "test_output_lfn" in r.json["message"]
    r = new_request(api, production, output_abs="/storage/flat")          # the LFN derives, the path does not
    assert r.status_code == 400 and "test_output_abs" in r.json["message"]
    made = new_request(api, production, output_lfn="lfn:/grid/vo/flat/out",
                       test_output_lfn="lfn:/grid/vo/flat/test").json
    assert twin_of(api, made)["output_lfn"] == "lfn:/grid/vo/flat/test" and made["same_output_dirs"] is False
    shared = new_request(api, production, generator="shared", output_lfn="lfn:/grid/vo/flat/out",
                         output_abs="/storage/flat", same_output_dirs=True).json
    twin = twin_of(api, shared)
    assert (twin["output_lfn"], twin["output_abs"]) == ("lfn:/grid/vo/flat/out", "/storage/flat")
    assert shared["same_output_dirs"] is True


def test_contradictory_choices_are_400(api, production):
    r = new_request(api, production, same_output_dirs=True, test_output_lfn="lfn:/grid/vo/t")
    assert r.status_code == 400 and "same_output_dirs" in r.json["message"]
    r = new_request(api, production, test_output_lfn=production["request"]["output_lfn"])
    assert r.status_code == 400 and "same_output_dirs" in r.json["message"]
    assert new_request(api, production, same_output_dirs="yes").status_code == 400


def test_modifying_the_directories_decides_the_test_directories_again(api, production):
    made = new_request(api, production).json
    rid = made["id"]
    moved = LFN.replace("/output/", "/output2/")
    assert api.patch(f"/requests/{rid}", json={"output_lfn": moved}).status_code == 200
    assert twin_of(api, made)["output_lfn"] == moved.replace("/2010_July/", "/2010_July_test/")
    r = api.patch(f"/requests/{rid}", json={"output_lfn": "lfn:/grid/vo/flat"})
    assert r.status_code == 400 and "test_output_lfn" in r.json["message"]
    r = api.patch(f"/requests/{rid}", json={"output_lfn": "lfn:/grid/vo/flat", "same_output_dirs": True})
    assert r.status_code == 200 and r.json["same_output_dirs"] is True
    assert twin_of(api, made)["output_lfn"] == "lfn:/grid/vo/flat"
    # sharing, once chosen, holds when the directory moves again; an explicit test directory ends it
    api.patch(f"/requests/{rid}", json={"output_lfn": "lfn:/grid/vo/flat2"})
    assert twin_of(api, made)["output_lfn"] == "lfn:/grid/vo/flat2"
    r = api.patch(f"/requests/{rid}", json={"test_output_lfn": "lfn:/grid/vo/flat2_test"})
    assert r.status_code == 200 and r.json["same_output_dirs"] is False
    assert twin_of(api, made)["output_lfn"] == "lfn:/grid/vo/flat2_test"
    # the test request's directories are set on its main request, and freeze with it
    r = api.patch(f"/requests/{made['test_request']}", json={"output_lfn": "lfn:/grid/vo/x"})
    assert r.status_code == 400 and str(rid) in r.json["message"]
    api.patch(f"/requests/{rid}", json={"status": "valid"})
    r = api.patch(f"/requests/{rid}", json={"test_output_lfn": "lfn:/grid/vo/y"})
    assert r.status_code == 409 and r.json["error"] == "request-not-open"


# ------------------------------------------------------------------ 5. the note: at most 255 characters

def test_the_note_holds_255_characters_and_refuses_more_with_400(api, production):
    full = "é" * 254 + "😀"
    made = new_request(api, production, note=full)
    assert made.status_code == 201 and made.json["note"] == full
    r = new_request(api, production, generator="long", note=full + "x")
    assert r.status_code == 400 and "note" in r.json["message"] and "255" in r.json["message"]
    rid = made.json["id"]
    r = api.patch(f"/requests/{rid}", json={"note": "n" * 256})
    assert r.status_code == 400 and "note" in r.json["message"]
    api.patch(f"/requests/{rid}", json={"status": "valid"})        # the note stays editable
    assert api.patch(f"/requests/{rid}", json={"note": "ü" * 255}).json["note"] == "ü" * 255
    assert api.get(f"/requests/{rid}").json["note"] == "ü" * 255


def test_a_note_that_is_not_unicode_text_is_400(api, production):
    r = api.patch(f"/requests/{production['request']['id']}", json={"note": "\ud800"})
    assert r.status_code == 400, r.json
