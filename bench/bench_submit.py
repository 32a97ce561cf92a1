"""Preparing N jobs in one submission against a bare bulk insert of the same job rows (goal: ratio <= 3).

python -m bench.bench_submit [--quick] [--jobs N]   (SQLite in a temp dir; --quick: 2,000 jobs)
"""
import argparse
import tempfile
import time

from server import create_app, db, submissions
from server import models as m
from server.auth import add_user

PARAMS = {"Analysis": "A", "Generator": "G", "Geometry": "DG_4", "Background": "B"}


def setup(client, token):
    h = {"Authorization": f"Bearer {token}"}
    calls = [("/sessions", {"name": "FastSim", "payload_module": "fastsim",
                            "parameters": [{"name": k} for k in PARAMS]}),
             ("/sessions/FastSim/software", {"name": "App", "version": "V1", "revision": 1,
                                             "lfn": "lfn:/grid/x/app.tjz", "adler32": "1a2b3c4d",
                                             "workdir": "w", "exe": "bin/x"}),
             ("/productions", {"name": "P", "session": "FastSim", "version": "V1", "revision": 1}),
             ("/sites", {"name": "INFN-T1", "bunch_size": 100}),
             ("/requests", {"production": "P", "min_runnum": 1000, "events_per_job": 10, "parameters": PARAMS,
                            "input_mode": "NONE", "output_lfn": "lfn:/grid/x/P/out", "output_sites": ["INFN-T1"]})]
    for path, body in calls:
        r = client.post("/api/v1" + path, json=body, headers=h)
        assert r.status_code == 201, (path, r.json)
    request_id = r.json["id"]
    assert client.patch(f"/api/v1/requests/{request_id}", json={"status": "valid"}, headers=h).status_code == 200
    return request_id


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.bench_submit")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--jobs", type=int)
    args = parser.parse_args(argv)
    n = args.jobs or (2000 if args.quick else 10_000)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"DB": f"sqlite:///{tmp}/sbk.db"})
        with app.app_context(), db.connection():
            token = add_user("bench", ["Developer"])
            request_id = setup(app.test_client(), token)
            user = m.User.get(m.User.name == "bench")
            bulk = submissions.Bulk(request_id=request_id, test=False, sites=("INFN-T1",), runs=n, events=10,
                                    log_to_db=False)
            t0 = time.perf_counter()
            plan = submissions.prepare_jobs(user, "P", [bulk])
            prepare_s = time.perf_counter() - t0
            assert len(plan["job_ids"]) == n
            # The reference: the same rows, one bare multi-row INSERT per 200 in one transaction.
            template = m.Job.select().where(m.Job.id == plan["job_ids"][0]).dicts().get()
            del template["id"]
            start = 10 ** 9
            rows = [dict(template, runnum=start + i) for i in range(n)]
            t0 = time.perf_counter()
            with db.write_transaction():
                for i in range(0, n, 200):
                    m.Job.insert_many(rows[i:i + 200]).execute()
            insert_s = time.perf_counter() - t0
    ratio = prepare_s / insert_s
    print(f"prepare_jobs {n} jobs: {prepare_s:.3f} s; bare bulk insert of the same rows: {insert_s:.3f} s; "
          f"ratio {ratio:.2f}x (goal <= 3x) {'OK' if ratio <= 3 else 'OVER'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
