"""Factories for test data: a valid job description, changed where a test says."""
import copy


def job_description_dict(**sections):
    """The CONTRACT §1 example, with `sections` merged over it (one level deep)."""
    desc = {
        "schema": 1,
        "job": {"id": 42, "runnum": 10000003, "attempt": 1, "session": "FastSim",
                "production": "2010_July", "request": 7, "events": 80000, "test": False},
        "server": {"url": "http://127.0.0.1:8080", "token": "secret-token", "heartbeat_s": 300},
        "software": {"name": "PacProductionApp", "version": "V0.2.5", "revision": 311,
                     "lfn": "lfn:/grid/superbvo.org/production/FastSim/2010_September/"
                            "test_release/V0.2.5_SL-5.3_x86_64_rev311.tjz",
                     "adler32": "1a2b3c4d", "workdir": "FastSim/V0.2.5", "exe": "bin/PacProduction"},
        "payload": {"module": "fastsim",
                    "parameters": {"Analysis": "HadRecoilCocktail", "Generator": "B0B0bar_SL",
                                   "Geometry": "DG_4", "Background": "MixSuperbBkg_NoPair.tcl"},
                    "env": {"BFROOT": "/opt/superb"}},
        "input": {"mode": "DIR",
                  "paths": ["lfn:/grid/superbvo.org/production/FastSim/2010_September/Input"]},
        "output": {"lfn_dir": "lfn:/grid/superbvo.org/production/FastSim/2010_July/output/"
                              "HadRecoilCocktail/DG_4/B0B0bar_SL",
                   "sites": ["INFN-T1"], "patterns": ["*.root"]},
        "log": {"to_db": True},
        "limits": {"max_wct_s": 86400, "max_rss_mb": 4096, "stall_s": 7200},
    }
    desc = copy.deepcopy(desc)
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(desc.get(name), dict):
            desc[name].update(value)
        else:
            desc[name] = value
    return desc
