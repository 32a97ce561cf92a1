"""Fixtures for the data-management tests: SE areas, site configs, job contexts, a catalog seam."""
import os
import pwd
import shutil
import socket
import tempfile
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.errors import RegistrationRefused
from shared.jobdesc import parse_job_description
from wrapper.catalog import FileEntry, Replica
from wrapper.client import ServerClient
from wrapper.context import JobContext
from wrapper.siteconfig import load_site_config

LFN_PREFIX = "/grid/test.vo"
# The test SEs are directories under /tmp, on the node's root file system: direct access to them
# needs the probe file a site names in [se] probe_file (a real SE is its own mount).
PROBE_FILE = ".severus-se"


def lfn(rel):
    return f"lfn:{LFN_PREFIX}/{rel}"


def adler32(data):
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def closed_port():
    """A loopback port nothing listens on: a dead endpoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SEArea:
    """A directory of its own on an XRootD SE, the same files by path and by every URL."""
    se: object
    name: str

    @property
    def path(self):
        return self.se.export / self.name

    def url(self, scheme):
        return {"root": self.se.root_url, "http": self.se.http_url, "dav": self.se.dav_url}[scheme] + "/" + self.name

    def put(self, rel, data):
        """Write a file on the SE behind its back (as a site's data manager would)."""
        path = self.path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _give_to_xrootd(path.parent, self.path)
        path.write_bytes(data)
        _give_to_xrootd(path, self.path)
        return path


def _give_to_xrootd(path, stop):
    """Files and directories the daemon must write to belong to its user (it drops root)."""
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam("xrootd")
    path = Path(path)
    while True:
        os.chown(path, user.pw_uid, user.pw_gid)
        if path == Path(stop) or path.parent == path:
            break
        path = path.parent


def mark_se(path):
    """Put the site's probe file in a directory used as a direct-access SE root; its path."""
    probe = Path(path) / PROBE_FILE
    probe.write_text("severus direct-access probe file\n")
    return probe


@pytest.fixture()
def on_root_fs(tmp_path):
    """An empty directory on the node's root file system: an SE mount point with nothing mounted."""
    root_dev = os.stat("/").st_dev
    for parent in (tmp_path, Path("/var/tmp"), Path("/")):
        if os.stat(parent).st_dev == root_dev and os.access(parent, os.W_OK):
            break
    else:
        pytest.skip("no writable directory on the root file system")
    directory = Path(tempfile.mkdtemp(prefix="severus-unmounted-", dir=parent))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def make_area(se):
    area = SEArea(se, f"t-{uuid.uuid4().hex[:10]}")
    area.path.mkdir(parents=True)
    _give_to_xrootd(area.path, area.path)
    return area


@pytest.fixture()
def area(xrootd_se):
    """A fresh area on the session's SE."""
    return make_area(xrootd_se)


class MemoryCatalog:
    """The Catalog's methods over a dict: the unit-test seam for the server's catalog routes
    and its fence (`fenced`: the error the fence raises; `fences`: how often it was asked)."""

    def __init__(self):
        self.files = {}
        self.fenced = None
        self.fences = 0

    def fence(self, job, wait_s, cancel=None, kill_stops=True):
        self.fences += 1
        if self.fenced is not None:
            raise self.fenced

    def add(self, lfn_, site, surl, data=None, size=None, checksum=None):
        size = len(data) if data is not None else size
        checksum = adler32(data) if data is not None else checksum
        old = self.files.get(lfn_)
        replicas = tuple(r for r in (old.replicas if old else ()) if r.site != site)
        self.files[lfn_] = FileEntry(lfn_, size, checksum, replicas + (Replica(site, surl),))

    def replicas(self, lfn_):
        return self.files.get(lfn_)

    def files_under(self, lfn_dir):
        prefix = lfn_dir.rstrip("/") + "/"
        return [self.files[k] for k in sorted(self.files) if k.startswith(prefix)]

    def register(self, replicas, wait_s=0.0, cancel=None):
        for lfn_, site, surl, size, adler32_ in replicas:   # all checked first: all or nothing
            old = self.files.get(lfn_)
            if old and (old.size, old.adler32) != (size, adler32_):
                raise RegistrationRefused(f"{lfn_}: replica-mismatch")
        for lfn_, site, surl, size, adler32_ in replicas:
            self.add(lfn_, site, surl, size=size, checksum=adler32_)

    def deregister(self, lfn_, site):
        old = self.files.get(lfn_)
        if old:
            self.files[lfn_] = FileEntry(old.lfn, old.size, old.adler32,
                                         tuple(r for r in old.replicas if r.site != site))


@pytest.fixture()
def catalog():
    return MemoryCatalog()


@pytest.fixture()
def sites_dir(tmp_path):
    d = tmp_path / "sites"
    d.mkdir()
    return d


@pytest.fixture()
def make_site(sites_dir):
    """Write and load a site config; `urls` and `local_path` point into SE areas."""

    def make(name, urls=(), local_path=None, access="auto", fallback=(), min_free_gb=0.0, probe_file=None,
             **transfer):
        options = {"retries": 1, "backoff_s": 0.05, "probe_timeout_s": 5.0}
        options.update(transfer)
        lines = [f'name = "{name}"', "[se]", f'lfn_prefix = "{LFN_PREFIX}"',
                 "urls = [" + ", ".join(f'"{u}"' for u in urls) + "]", f'access = "{access}"']
        if local_path:
            lines.append(f'local_path = "{local_path}"')
        if probe_file:
            lines.append(f'probe_file = "{probe_file}"')
        lines += ["[stageout]", "fallback_sites = [" + ", ".join(f'"{s}"' for s in fallback) + "]",
                  "[scratch]", f"min_free_gb = {min_free_gb}", "[transfer]"]
        lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in options.items()]
        path = sites_dir / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return load_site_config(path)

    return make


def site_for(make_site, area, scheme, name="SITE-A", **kw):
    """A site reaching `area` by `scheme` (root, http, dav) or directly (direct)."""
    if scheme == "direct":
        mark_se(area.path)
        return make_site(name, urls=[area.url("root")], local_path=str(area.path), access="direct",
                         probe_file=PROBE_FILE, **kw)
    return make_site(name, urls=[area.url(scheme)], access="protocol", **kw)


def job_dict(**sections):
    d = {
        "schema": 1,
        "job": {"id": 7, "runnum": 10000003, "attempt": 1, "session": "FastSim",
                "production": "2010_July", "request": 1, "events": 10},
        "server": {"url": "http://127.0.0.1:9", "token": "job-token"},
        "software": {"name": "App", "version": "V1", "revision": 1, "lfn": lfn("sw/app.tgz"),
                     "adler32": "00000001", "workdir": "App", "exe": "App/bin/run"},
        "payload": {"module": "generic"},
        "input": {"mode": "NONE"},
        "output": {"lfn_dir": lfn("out/run1"), "sites": [], "patterns": ["*.root"]},
    }
    for key, value in sections.items():
        d[key] = dict(d[key], **value) if isinstance(value, dict) and key in d else value
    return d


@pytest.fixture()
def make_ctx(tmp_path, sites_dir):
    """A JobContext for `site` with the job description's sections overridden."""
    notes = []

    def make(site, server=None, **sections):
        workdir = tmp_path / f"work-{uuid.uuid4().hex[:6]}"
        workdir.mkdir()
        desc = parse_job_description(job_dict(**sections))
        ctx = JobContext(desc=desc, site=site, workdir=workdir,
                         server=server or ServerClient(desc.server.url, desc.server.token, timeout=2),
                         note=notes.append, site_config_dirs=(str(sites_dir),))
        ctx.notes = notes
        return ctx

    return make
