"""The payload in a container: which runtime, which image, the command line, the start check.

A payload runs in a container image when its job asks for one (`container.image` in the
job description: the job's own, or its session's, which the server writes into the same
field) or when the site requires it (`[container] required = true`: the site's default
`image` for jobs that name none). The job's image wins over the site's default: it is what
the software was built for.

The runtime is the first of the site's `runtimes` (default: apptainer, then bwrap) that is
installed on the node. Apptainer runs directory images (CVMFS-style) and SIF files:

    apptainer exec --contain --pid [--userns as root] --bind WD [--bind RO:RO:ro ...]
                   --pwd WD IMAGE /bin/sh -c '<start marker>; exec "$@"' ... ARGV

bubblewrap runs directory images only, with the equivalent of --contain --pid: a tmpfs
root holding the image's top-level entries read-only, fresh /tmp /var/tmp /run /home,
the work dir bound read-write, the software area and the site's binds read-only.
Neither runtime forwards signals to the payload; the watchdog does not need it: it
signals every process of the tree by its host PID, and --pid / --die-with-parent
tear the PID namespace down when the runtime's own process dies.

Start check: the payload's argv is run through `/bin/sh` in the image, which first
touches a marker file in the work dir. A runtime that ends without the marker could
not start the container (bad image, missing bind, broken runtime): ContainerError
(007, blame site) with the runtime's last stderr line, never the payload's 030. A
runtime or image missing on the node is 007 at once; a site that forbids containers
while one is required, or asks for an image with no runtime allowed, is 002.

Both runtimes report a payload killed by signal N as exit code 128+N; `signal_of()`
turns it back into the signal, so the codes are the same as outside (031).
"""
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from shared.errors import ContainerError, SiteConfigError

RUNTIMES = ("apptainer", "bwrap")
MARKER = ".severus-container-started"
# Runs inside the image: the marker proves the container started, then the payload replaces
# the shell (same PID: the tree, signals and exit code are the payload's own).
START_SCRIPT = ': > "$0" || exit 126; exec "$@"'
# What PATH a payload sees inside (Apptainer's own default; the host's PATH names host dirs).
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Top-level dirs bubblewrap makes fresh (as Apptainer's --contain) rather than take from the image.
FRESH_DIRS = ("/proc", "/sys", "/dev", "/tmp", "/var", "/run", "/home", "/root")
VERSION_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ContainerConfig:
    """The site's `[container]` table."""
    runtimes: Tuple[str, ...] = RUNTIMES   # allowed, in order of preference; () = none
    image: Optional[str] = None             # the default image (a directory or a SIF file)
    required: bool = False                  # every payload in a container (`image` when the job names none)
    binds: Tuple[str, ...] = ()             # host paths the payload sees read-only (e.g. /cvmfs)
    apptainer: str = "apptainer"            # the executables: a name on PATH or a path
    bwrap: str = "bwrap"


def parse_container_config(table, fail) -> ContainerConfig:
    """The `[container]` table of a site config; `fail(message)` raises the 002."""
    extra = sorted(set(table) - set(ContainerConfig.__dataclass_fields__))
    if extra:
        fail(f"unknown key 'container.{extra[0]}'")
    runtimes = table.get("runtimes", list(RUNTIMES))
    if runtimes == "none":
        runtimes = []
    if not isinstance(runtimes, list) or not all(r in RUNTIMES for r in runtimes):
        fail("'container.runtimes' must be a list of apptainer, bwrap (or \"none\")")
    image = table.get("image")
    if image is not None and (not isinstance(image, str) or not image.startswith("/")):
        fail("'container.image' must be an absolute path (a directory image or a SIF file)")
    required = table.get("required", False)
    if not isinstance(required, bool):
        fail("'container.required' must be true or false")
    binds = table.get("binds", [])
    if not isinstance(binds, list) or not all(isinstance(b, str) and b.startswith("/") and ":" not in b
                                              for b in binds):
        fail("'container.binds' must be a list of absolute paths without ':'")
    tools = {}
    for key in ("apptainer", "bwrap"):
        value = table.get(key, key)
        if not isinstance(value, str) or not value:
            fail(f"'container.{key}' must be an executable's name or path")
        tools[key] = value
    if (required or image) and not runtimes:
        fail("'container.required' or 'container.image' is set but no runtime is allowed")
    if required and not image:
        fail("'container.required' is set but 'container.image' is not")
    return ContainerConfig(runtimes=tuple(runtimes), image=image, required=required,
                           binds=tuple(binds), **tools)


@dataclass(frozen=True)
class Runtime:
    """An installed runtime: its name, executable and version line."""
    name: str
    path: str
    version: str

    def describe(self):
        return f"{self.name} {self.version} ({self.path})"


def find_runtime(name, executable) -> Optional[Runtime]:
    """The runtime `name` when `executable` is installed and answers --version, else None."""
    path = shutil.which(executable)
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=VERSION_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    # "apptainer version 1.4.5", "bubblewrap 0.8.0": the last word is the version.
    words = out.stdout.split()
    return Runtime(name, path, words[-1] if words else "?")


def installed_runtimes(config: Optional[ContainerConfig] = None) -> str:
    """"apptainer 1.4.5, bwrap 0.8.0": the runtimes this node has (for `severus check`)."""
    config = config or ContainerConfig()
    found = (find_runtime(n, getattr(config, n)) for n in RUNTIMES)
    return ", ".join(f"{r.name} {r.version}" for r in found if r is not None)


def choose_runtime(config: ContainerConfig) -> Runtime:
    """The first allowed runtime installed here; 002 when none is allowed, 007 when none is installed."""
    if not config.runtimes:
        raise SiteConfigError("the payload needs a container and the site allows no runtime "
                              "([container] runtimes)")
    for name in config.runtimes:
        runtime = find_runtime(name, getattr(config, name))
        if runtime is not None:
            return runtime
    wanted = ", ".join(f"{n} ({getattr(config, n)})" for n in config.runtimes)
    raise ContainerError(f"no container runtime on this node: none of {wanted} is installed")


def wanted_image(job_image, config: ContainerConfig) -> Optional[str]:
    """The image the payload runs in, or None for none: the job's, else the site's when it requires one."""
    if job_image:
        return job_image
    return config.image if config.required else None


@dataclass(frozen=True)
class Container:
    """How one payload runs in its image; `command(argv)` is what the watchdog starts."""
    runtime: Runtime
    image: str
    workdir: str                   # bound read-write, the payload's cwd
    ro_binds: Tuple[str, ...] = ()

    @property
    def marker(self) -> Path:
        return Path(self.workdir) / MARKER

    def describe(self):
        return f"{self.runtime.name} {self.runtime.version}, image {self.image}"

    def command(self, argv) -> Tuple[str, ...]:
        inner = ("/bin/sh", "-c", START_SCRIPT, str(self.marker)) + tuple(argv)
        if self.runtime.name == "apptainer":
            return self._apptainer() + inner
        return self._bwrap() + inner

    def _apptainer(self):
        args = [self.runtime.path, "exec", "--contain", "--pid"]
        if os.geteuid() == 0:
            args.append("--userns")   # root without CAP_SYS_RESOURCE: the setuid path fails
        args += ["--bind", self.workdir]
        for path in self.ro_binds:
            args += ["--bind", f"{path}:{path}:ro"]
        args += ["--pwd", self.workdir, self.image]
        return tuple(args)

    def _bwrap(self):
        """The recipe's --contain equivalent: image entries read-only under a tmpfs root."""
        img = Path(self.image)
        args = [self.runtime.path, "--unshare-user-try", "--unshare-pid", "--unshare-ipc",
                "--unshare-uts", "--unshare-cgroup-try", "--die-with-parent", "--tmpfs", "/"]
        for entry in sorted(img.iterdir()):
            target = "/" + entry.name
            if target in FRESH_DIRS:
                continue
            args += _mirror(entry, target)
        for name in ("/etc/resolv.conf", "/etc/hosts"):   # only onto files the image has
            if (img / name.lstrip("/")).exists():
                args += ["--ro-bind-try", name, name]
        args += ["--tmpfs", "/var"]
        var = img / "var"
        if var.is_dir():
            for entry in sorted(var.iterdir()):
                if entry.name != "tmp":
                    args += _mirror(entry, "/var/" + entry.name)
        home = os.environ.get("HOME") or "/root"
        args += ["--proc", "/proc", "--dev", "/dev", "--ro-bind", "/sys", "/sys",
                 "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/run", "--tmpfs", "/home",
                 "--tmpfs", "/root", "--dir", home, "--bind", self.workdir, self.workdir]
        for path in self.ro_binds:
            args += ["--ro-bind", path, path]
        args += ["--chdir", self.workdir, "--setenv", "PATH", CONTAINER_PATH,
                 "--setenv", "APPTAINER_CONTAINER", self.image,
                 "--setenv", "APPTAINER_NAME", img.name, "--remount-ro", "/"]
        return tuple(args)

    def started(self) -> bool:
        """Did the payload's command start inside the container (the marker is there)?"""
        return self.marker.exists()

    def clear(self):
        try:
            self.marker.unlink()
        except FileNotFoundError:
            pass


def _mirror(entry: Path, target):
    if entry.is_symlink():
        return ["--symlink", os.readlink(entry), target]
    if entry.is_dir():
        return ["--ro-bind", str(entry), target]
    return []


def plan_container(job_image, config: ContainerConfig, workdir, ro_paths=()) -> Optional[Container]:
    """The Container a payload runs in (None: on the host); 002/007 when it cannot be had.

    `ro_paths` are host paths the payload needs besides the work dir (the software area
    when it lies outside, e.g. in the node cache); they are bound read-only with the
    site's binds. Everything is checked here, before the payload starts, so a missing
    image, bind or runtime fails at once.
    """
    image = wanted_image(job_image, config)
    if image is None:
        return None
    runtime = choose_runtime(config)
    path = Path(image)
    if not path.exists():
        raise ContainerError(f"image {image} is missing on this node")
    if runtime.name == "bwrap" and not path.is_dir():
        raise ContainerError(f"bubblewrap runs directory images only; {image} is a file "
                             "(a SIF image needs Apptainer)")
    if not os.access(image, os.R_OK):
        raise ContainerError(f"image {image} is not readable")
    for bind in config.binds:
        if not os.path.exists(bind):
            raise ContainerError(f"site bind {bind} is missing on this node")
    workdir = str(Path(workdir).resolve())
    binds = []
    for p in tuple(ro_paths) + config.binds:
        p = str(Path(p).resolve())
        if not _below(p, workdir) and not any(_below(p, b) for b in binds):
            binds.append(p)
    return Container(runtime=runtime, image=str(path.resolve()), workdir=workdir,
                     ro_binds=tuple(binds))


def _below(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def signal_of(exit_code) -> Optional[int]:
    """The signal a container's exit code 128+N stands for (the runtimes report deaths so)."""
    if exit_code is None or not 128 < exit_code < 128 + 65:
        return None
    try:
        return int(signal.Signals(exit_code - 128))
    except ValueError:
        return None


def probe(container: Container, timeout_s=60.0) -> str:
    """Start the image once with a no-op (for `severus check`); its start time, or ContainerError."""
    container.clear()
    began = time.monotonic()
    try:
        out = subprocess.run(container.command(["/bin/sh", "-c", ":"]), capture_output=True,
                             text=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
                             cwd=container.workdir, start_new_session=True)
    except subprocess.TimeoutExpired:
        raise ContainerError(f"{container.describe()}: no start within {timeout_s:g} s") from None
    except OSError as exc:
        raise ContainerError(f"{container.runtime.path}: {exc.strerror}") from None
    finally:
        started = container.started()
        container.clear()
    if not started or out.returncode != 0:
        raise ContainerError(f"{container.describe()}: {last_line(out.stderr) or f'exit {out.returncode}'}")
    return f"{time.monotonic() - began:.2f} s"


def last_line(text):
    """The last meaningful line of a runtime's stderr (its warnings about passwd files skipped)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    fatal = [ln for ln in lines if not ln.startswith("WARNING:")]
    return (fatal or lines or [""])[-1]
