"""What every stage of a job is handed: the job, the site, the work dir, the
server, and the collectors for the final report.

Data flows one way: the job description and site config go in (frozen), the
stages add what they did (transfer attempts, access decisions), and the
runner turns it into the final report.
"""
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

from shared.jobdesc import JobDescription
from .client import ServerClient
from .siteconfig import SiteConfig, find_site_config


def _no_note(message):
    pass


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
    site_config_dirs: tuple = ()

    def find_site(self, name) -> SiteConfig:
        """Another site's configuration (fallback stage-out, remote replicas)."""
        if name == self.site.name:
            return self.site
        dirs = self.site_config_dirs
        if self.site.source and Path(self.site.source).is_file():
            dirs = (str(Path(self.site.source).parent),) + tuple(dirs)
        return find_site_config(name, dirs)

    @property
    def scratch(self) -> Path:
        return self.workdir
