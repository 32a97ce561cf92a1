"""Payload modules: what a job's step runs, as a command line, an environment and a progress source.

A module only turns the step into a command line (seed 000: "the specific
session module now only launches the executable with specific parameters");
the watchdog (wrapper/payload.py) runs it. Modules are found in the explicit
MODULES registry, then in the `severus.payload_modules` entry point group so a
site can add its own without touching this file:

    from wrapper.modules import PayloadModule
    class MyModule(PayloadModule):
        name = "mysim"
        required_parameters = ("Geometry",)
        def argv(self, job): ...      # job.step: its parameters, args and env
    # setup.py: entry_points={"severus.payload_modules": ["mysim = mypkg:MyModule"]}

or, for severus.pyz (where no entry point is installed), packed into it:
`severus pack --module mysim.py` (wrapper/pack.py) puts the file in the archive's
`severus_site_modules` package, whose MODULES names it; it is looked up after
the built-in modules and before the entry points.

A job is one or more steps (shared/jobdesc.py `Payload.steps_to_run()`);
`plan_steps()` finds every step's module and checks its parameters before any
transfer, so a bad step is 001 at the first node check, not after staging.
"""
import importlib
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from shared.errors import DataQualityFailed, JobDescriptionError, PayloadFailed
from shared.jobdesc import PayloadStep
from . import container as ct
from .payload import PayloadSpec

ENTRY_POINT_GROUP = "severus.payload_modules"
PACKED_PACKAGE = "severus_site_modules"    # in severus.pyz: a site's modules, `severus pack --module`
PROGRESS_FILE = "severus-progress"


@dataclass(frozen=True)
class PayloadJob:
    """What a module may read: the job description, the step it runs, the software and the inputs."""
    desc: object                 # shared.jobdesc.JobDescription
    exe: Path                    # absolute path of the software's executable
    software_root: Path
    software_workdir: Path       # the release's own directory (software.workdir)
    cwd: Path                    # where the payload runs and writes its outputs
    inputs: Tuple[Path, ...] = ()
    site: object = None          # wrapper.siteconfig.SiteConfig: its [container]; None: the defaults
    # The step being run, its parameters and env already the payload's with its own over them;
    # None: the job's first step (a single-module job's only one).
    step: Optional[PayloadStep] = None
    index: int = 1               # the step's place, from 1

    def __post_init__(self):
        if self.step is None:
            object.__setattr__(self, "step", self.desc.payload.steps_to_run()[0])


class PayloadModule:
    """Base class: `argv()` and `extra_env()` are what a module decides; `check()` what it needs."""
    name = "base"
    required_parameters: Tuple[str, ...] = ()
    # What a non-zero exit of its command is: the payload's 030, or a module's own code (dq: 035).
    exit_error = PayloadFailed

    def check(self, step: PayloadStep):
        """Raise JobDescriptionError (one line, without the field) when `step` cannot run here."""
        missing = [p for p in self.required_parameters if not step.parameters.get(p)]
        if missing:
            raise JobDescriptionError(f"payload module {self.name} needs parameter(s) {', '.join(missing)}")

    def argv(self, job: PayloadJob):
        return (str(job.exe),) + tuple(job.step.args)

    def extra_env(self, job: PayloadJob):
        return {}

    def build(self, job: PayloadJob) -> PayloadSpec:
        """The PayloadSpec for `job`'s step; a missing parameter is a bad description (001)."""
        self.check(job.step)
        d, step = job.desc, job.step
        progress = job.cwd / PROGRESS_FILE
        env = dict(os.environ)
        env.update({
            "SEVERUS_JOB_ID": str(d.job.id),
            "SEVERUS_ATTEMPT": str(d.job.attempt),
            "SEVERUS_RUNNUM": str(d.job.runnum),
            "SEVERUS_EVENTS": str(d.job.events),
            "SEVERUS_SESSION": d.job.session,
            "SEVERUS_PRODUCTION": d.job.production,
            "SEVERUS_SOFTWARE_ROOT": str(job.software_root),
            "SEVERUS_SOFTWARE_WORKDIR": str(job.software_workdir),
            "SEVERUS_INPUTS": os.pathsep.join(str(p) for p in job.inputs),
            "SEVERUS_PROGRESS_FILE": str(progress),
            "SEVERUS_STEP": step.name,
            "SEVERUS_STEP_INDEX": str(job.index),
        })
        env.update(core_env(d.limits.cores))
        for key, value in step.parameters.items():
            env["SEVERUS_PARAM_" + key.upper()] = value
        env.update(self.extra_env(job))
        env.update(step.env)          # the job's own settings win (the payload's, then the step's)
        # The job's image (or its session's), else the site's when it requires one; checked now:
        # a missing runtime or image is 007 (002: the site forbids it) before anything starts.
        config = getattr(job.site, "container", None) or ct.ContainerConfig()
        container = ct.plan_container(d.container.image if d.container else None, config,
                                      job.cwd, ro_paths=(job.software_root,))
        return PayloadSpec(argv=tuple(self.argv(job)), env=env, cwd=job.cwd,
                           progress_file=progress, output_patterns=tuple(d.output.patterns),
                           container=container)


def core_env(cores):
    """The job's cores (limits.cores) as threaded and multi-process payloads read them: OpenMP and the
    math libraries, ATLAS-style ATHENA_CORE_NUMBER / ATHENA_PROC_NUMBER. A node's own values (a
    batch system's whole-node defaults) would oversubscribe a job given fewer cores: ours win."""
    n = str(cores)
    return {"SEVERUS_CORES": n, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n,
            "ATHENA_CORE_NUMBER": n, "ATHENA_PROC_NUMBER": n}


class GenericModule(PayloadModule):
    """Runs the software's exe with the step's args; the job is in SEVERUS_* variables."""
    name = "generic"


class SimulationModule(PayloadModule):
    """SuperB simulations: the seed's four job parameters become options."""
    required_parameters = ("Analysis", "Generator", "Geometry", "Background")

    def argv(self, job):
        p, d = job.step.parameters, job.desc
        return (str(job.exe), "--events", str(d.job.events), "--runnum", str(d.job.runnum),
                "--analysis", p["Analysis"], "--generator", p["Generator"],
                "--geometry", p["Geometry"], "--background", p["Background"]) + tuple(job.step.args)


class FastSimModule(SimulationModule):
    name = "fastsim"


class FullSimModule(SimulationModule):
    name = "fullsim"

    def extra_env(self, job):
        # FullSim (Bruno, Geant4) reads its geometry by name from the environment.
        return {"BRUNO_GEOMETRY": job.step.parameters["Geometry"]}


class DataQualityModule(PayloadModule):
    """A data-quality check of the outputs (seed 001): the step's args are a command that must
    succeed, run in the work dir on what the steps before wrote; its non-zero exit is 035.

    The first word is a path in the release (relative to software.workdir) or an absolute one.
    """
    name = "dq"
    exit_error = DataQualityFailed

    def check(self, step):
        super().check(step)
        if not step.args:
            raise JobDescriptionError("payload module dq needs args: the check's command line")
        first = step.args[0]
        norm = posixpath.normpath(first)
        if not first or (not first.startswith("/") and (norm == ".." or norm.startswith("../"))):
            raise JobDescriptionError(f"payload module dq: the command {first!r} must be absolute "
                                      "or a path inside the software workdir")

    def argv(self, job):
        first, rest = job.step.args[0], tuple(job.step.args[1:])
        command = first if first.startswith("/") else str(job.software_workdir / first)
        return (command,) + rest


class MergeModule(PayloadModule):
    """A follow-up stage's merge (seed 002: the output of the simulation merged): the job's inputs
    (its request's outputs, staged into the work dir) into one file, `<runnum>.merged.tgz` (`how` =
    tar, the default) or `<runnum>.merged<the first input's extension>` (`how` = cat). It only builds
    the command line (seed 000); a VO's real merge (hadd, say) is a step template of its own module."""
    name = "merge"
    HOW = ("tar", "cat")

    def check(self, step):
        super().check(step)
        how = step.parameters.get("how", "tar")
        if how not in self.HOW:
            raise JobDescriptionError(f"payload module merge: parameter how must be {' or '.join(self.HOW)}, "
                                      f"not {how!r}")

    def argv(self, job):
        # "./name": a file whose name starts with "-" is not an option to tar or cat
        names = ["./" + os.path.relpath(p, job.cwd) if Path(p).is_relative_to(job.cwd) else str(p)
                 for p in job.inputs]
        runnum = job.desc.job.runnum
        if job.step.parameters.get("how", "tar") == "tar":
            return ("tar", "-czf", f"{runnum}.merged.tgz") + tuple(names)
        ext = posixpath.splitext(names[0])[1] if names else ""
        return ("sh", "-c", 'out=$1; shift; cat "$@" > "$out"', "merge", f"{runnum}.merged{ext}") + tuple(names)


MODULES = {m.name: m for m in (GenericModule, FastSimModule, FullSimModule, DataQualityModule, MergeModule)}


def _entry_points(group):
    from importlib import metadata
    eps = metadata.entry_points()
    if hasattr(eps, "select"):
        return list(eps.select(group=group))
    return list(eps.get(group, ()))  # Python 3.9: a dict of groups


def packed_modules():
    """{name: "file:Class"} of the payload modules packed into this severus.pyz; {} elsewhere."""
    try:
        packed = importlib.import_module(PACKED_PACKAGE)
    except ImportError:
        return {}
    return dict(getattr(packed, "MODULES", {}))


def _load_packed(value):
    stem, _, cls = value.partition(":")
    return getattr(importlib.import_module(f"{PACKED_PACKAGE}.{stem}"), cls)


def find_module(name) -> PayloadModule:
    """An instance of the payload module called `name`: built in, packed into severus.pyz, or a
    site's entry point; unknown name → 001."""
    if name in MODULES:
        return MODULES[name]()
    packed, eps = packed_modules(), _entry_points(ENTRY_POINT_GROUP)
    found = [(value, lambda value=value: _load_packed(value)) for n, value in packed.items() if n == name]
    found += [(ep.value, ep.load) for ep in eps if ep.name == name]
    if found:
        value, load = found[0]
        try:
            cls = load()
        except Exception as exc:  # a site's broken plugin: say which one and why
            raise JobDescriptionError(f"payload module {name} ({value}) cannot be loaded: {exc}") from None
        return cls()
    known = sorted(set(MODULES) | set(packed) | {ep.name for ep in eps})
    raise JobDescriptionError(f"unknown payload module {name!r} (known: {', '.join(known)})")


def plan_steps(payload) -> Tuple[Tuple[PayloadStep, PayloadModule], ...]:
    """Every step of the job (shared.jobdesc.Payload) with its module, each checked: a module
    unknown on this node, a missing parameter or a bad dq command is 001 naming the field."""
    plan = []
    for n, step in enumerate(payload.steps_to_run()):
        where = f"payload.steps[{n}]" if payload.steps else "payload"
        named = f"'{where}' ({step.name})" if payload.steps else f"'{where}'"
        try:
            module = find_module(step.module)
        except JobDescriptionError as exc:
            raise JobDescriptionError(f"'{where}.module': {exc.detail}") from None
        try:
            module.check(step)
        except JobDescriptionError as exc:
            raise JobDescriptionError(f"{named}: {exc.detail}") from None
        plan.append((step, module))
    return tuple(plan)
