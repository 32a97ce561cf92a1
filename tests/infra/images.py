"""Container images and runtimes for the tests: a busybox directory image, bubblewrap, Apptainer.

The image is the kind Apptainer runs from CVMFS, 2 MB: Debian's busybox-static
(`/bin/busybox` with its applets linked), an /etc/passwd and /etc/group, the usual
top-level directories, and no /etc/debian_version (tests tell it from the host so).
It is made once per session from the installed package, or from the package file
`apt-get download` fetches when it is not installed.

Apptainer is not in Debian 12: `scripts/install-apptainer` unpacks 1.4 from the
unstable suite into /opt/severus-apptainer (5-15 s, once per machine).
"""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPTAINER_PREFIX = Path("/opt/severus-apptainer")
APPTAINER = APPTAINER_PREFIX / "usr/bin/apptainer"
INSTALL_HINT = "run `make test` or scripts/install-deps (it installs bubblewrap and busybox-static)"


def _busybox_binary(work: Path) -> Path:
    """Debian's static busybox: the installed package's, else unpacked from its .deb."""
    listed = subprocess.run(["dpkg", "-L", "busybox-static"], capture_output=True, text=True)
    if listed.returncode == 0:
        for line in listed.stdout.splitlines():
            if line.endswith("/bin/busybox") and Path(line).is_file():
                return Path(line)
    fetched = subprocess.run(["apt-get", "download", "-qq", "busybox-static"], cwd=work,
                             capture_output=True, text=True)
    debs = sorted(work.glob("busybox-static_*.deb"))
    if fetched.returncode != 0 or not debs:
        pytest.fail(f"busybox-static is not installed and cannot be downloaded: {INSTALL_HINT}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(work / "x")], check=True)
    return work / "x/bin/busybox"


def make_busybox_image(directory) -> Path:
    """A directory image with busybox and its applets; returns its path."""
    image = Path(directory)
    for sub in ("bin", "dev", "etc", "proc", "sys", "tmp", "var/tmp", "usr", "root", "home"):
        (image / sub).mkdir(parents=True, exist_ok=True)
    work = image.parent / (image.name + ".work")
    work.mkdir(exist_ok=True)
    busybox = image / "bin/busybox"
    shutil.copy2(_busybox_binary(work), busybox)
    shutil.rmtree(work)
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        link = image / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (image / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                      "nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n")
    (image / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return image


@pytest.fixture(scope="session")
def busybox_image(tmp_path_factory):
    """The busybox directory image, made once per session."""
    return make_busybox_image(tmp_path_factory.mktemp("images") / "busybox")


@pytest.fixture(scope="session")
def bwrap_path():
    path = shutil.which("bwrap")
    if path is None:
        pytest.fail(f"bubblewrap is not installed: {INSTALL_HINT}")
    return path


@pytest.fixture(scope="session")
def apptainer_path():
    """Apptainer 1.4 in its private prefix, installed by scripts/install-apptainer when missing."""
    if not APPTAINER.exists():
        out = subprocess.run([str(ROOT / "scripts/install-apptainer"), str(APPTAINER_PREFIX)],
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            pytest.fail("Apptainer is not installed and scripts/install-apptainer failed "
                        f"(it needs root and the apt mirror): {out.stderr.strip()[-300:]}")
    return str(APPTAINER)


@pytest.fixture(scope="session")
def busybox_sif(apptainer_path, busybox_image, tmp_path_factory):
    """The busybox image as a SIF file (`apptainer build`, which needs mksquashfs; running one as
    root without setuid needs squashfuse: both from scripts/install-deps)."""
    out = tmp_path_factory.mktemp("sif") / "busybox.sif"
    built = subprocess.run([apptainer_path, "build", str(out), str(busybox_image)], capture_output=True,
                           text=True, timeout=300)
    if built.returncode != 0:
        pytest.fail(f"apptainer build of a SIF failed (squashfs-tools installed? {INSTALL_HINT}): "
                    f"{built.stderr.strip()[-300:]}")
    return out
