"""Preparing N jobs in one submission against a bare bulk insert of the same job rows (goal: ratio <= 1).

python -m bench.bench_submit [--quick] [--jobs N] [--repeat R]
(SQLite in a temp dir; --quick: 2,000 jobs, one repeat; best of R, default 3)
"""
import argparse
import tempfile
import time

from bench.gate import Gate
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
    parser.add_argument("--repeat", type=int)
    args = parser.parse_args(argv)
    n = args.jobs or (2000 if args.quick else 10_000)
    repeat = args.repeat or (1 if args.quick else 3)
    gate = Gate("bench_submit", args.quick)
    gate.start()
    prepare_s, insert_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"DB": f"sqlite:///{tmp}/sbk.db"})
        with app.app_context(), db.connection():
            token = add_user("bench", ["Developer"])
            request_id = setup(app.test_client(), token)
            user = m.User.get(m.User.name == "bench")
            bulk = submissions.Bulk(request_id=request_id, test=False, sites=("INFN-T1",), runs=n, events=10,
                                    log_to_db=False)
            for k in range(repeat):
                t0 = time.perf_counter()
                plan = submissions.prepare_jobs(user, "P", [bulk])
                prepare_s.append(time.perf_counter() - t0)
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
                insert_s.append(time.perf_counter() - t0)
                # untimed: the next submission's runnums follow the real jobs', not these
                m.Job.delete().where(m.Job.runnum >= start).execute()
    print(f"prepare_jobs {n} jobs: best {min(prepare_s):.3f} s; bare bulk insert of the same rows: best "
          f"{min(insert_s):.3f} s; best of {repeat}")
    gate.add(f"{n:,}-job submission vs bare bulk insert", prepare_s, insert_s, ("<=", 1.0), unit="s")
    return gate.finish()


if __name__ == "__main__":
    raise SystemExit(main())
