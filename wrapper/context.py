"""What every stage of a job is handed: the job, the site, the work dir, the
server, the job's cancel event, and the collectors for the final report.

Data flows one way: the job description and site config go in (frozen), the
stages add what they did (transfer attempts, access decisions, the files they
wrote on SEs), and the runner turns it into the final report.
"""
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List

from shared.jobdesc import JobDescription
from .client import ServerClient
from .siteconfig import SiteConfig, find_other_site
from .transfer import Progress


def _no_note(message):
    pass


@dataclass(frozen=True)
class Written:
    """A file this attempt may have created on an SE: `url` through this node's access,
    `surl` as the catalog and the server name it."""
    site: str
    url: str
    surl: str
    transfer: Any = field(compare=False, repr=False)


class Writes:
    """The SE files this attempt may have created that no registration claims.

    Every upload notes its upload name and final name *before* it starts, so a stop
    or a crash at any moment leaves a complete list; a name is dropped once deleted
    or registered. One whose registration may have happened without our knowing
    (the reply was lost) is `uncertain`: only the server, which knows the catalog,
    may delete it (a removal request). Thread-safe: uploads run in parallel.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._files: Dict[str, Written] = {}
        self._uncertain = set()

    def note(self, written):
        with self._lock:
            self._files[written.url] = written

    def forget(self, urls):
        """Deleted, or registered: no longer ours to clean up."""
        with self._lock:
            for url in urls:
                self._files.pop(url, None)
                self._uncertain.discard(url)

    def mark_uncertain(self, urls, uncertain=True):
        """From the moment a registration is sent until its answer, its files may be registered."""
        with self._lock:
            if uncertain:
                self._uncertain.update(u for u in urls if u in self._files)
            else:
                self._uncertain.difference_update(urls)

    def take(self):
        """([Written] this attempt may delete itself, [Written] only the server may); now empty."""
        with self._lock:
            files, uncertain = self._files, self._uncertain
            self._files, self._uncertain = {}, set()
        return ([w for u, w in files.items() if u not in uncertain],
                [w for u, w in files.items() if u in uncertain])


@dataclass
class JobContext:
    desc: JobDescription
    site: SiteConfig
    workdir: Path                    # the job's scratch directory (everything below it)
    server: ServerClient
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("severus"))
    # Sends an `info` event to the server (e.g. "access: direct, /storage mounted").
    note: Callable[[str], None] = _no_note
    # Every transfer attempt (dicts of TransferAttempt), for the final report.
    transfers: List[dict] = field(default_factory=list)
    # Facts for the final report (access mode and reason, software source, ...).
    facts: dict = field(default_factory=dict)
    # Set when the job is being stopped (a signal, a kill command): transfers and pools end at once.
    cancel: threading.Event = field(default_factory=threading.Event)
    # What this attempt wrote on SEs and nobody registered (stage-out's all or nothing, the undo of a stop).
    writes: Writes = field(default_factory=Writes)
    # The bytes of the copies running now, for heartbeats (wrapper/transfer/progress.py).
    progress: Progress = field(default_factory=Progress)
    # Files it could not delete and the server was not told of: the final report's `removals`.
    removals: List[dict] = field(default_factory=list)
    site_config_dirs: tuple = ()

    def find_site(self, name) -> SiteConfig:
        """Another site's configuration (fallback stage-out, remote replicas)."""
        return find_other_site(self.site, name, self.site_config_dirs)

    @property
    def scratch(self) -> Path:
        return self.workdir
