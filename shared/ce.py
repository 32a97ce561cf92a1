"""A site config's `[ce]` table: the grid Compute Element that serves the site.

The site config is one TOML file read on both sides: the wrapper reads the whole of it on the
node (wrapper/siteconfig.py), the server's `arc` backend reads only this table, to know where
to submit. Both parse it here, so that `severus check` refuses what the backend would refuse.
"""
import re
from dataclasses import dataclass
from typing import Optional, Tuple

from .errors import SiteConfigError


@dataclass(frozen=True)
class CeConfig:
    url: str                      # the A-REX endpoint, https://host:443/arex
    queue: Optional[str] = None   # the CE's queue (its batch partition); None: the CE's default
    # The server delegates its credential to the CE and every job names that delegation: the job
    # runs with a proxy of the submitter (X509_USER_PROXY). false: the jobs use the node's own.
    delegate: bool = True
    # Runtime environments each job asks the CE for, e.g. ["ENV/PROXY"] where the CE copies the
    # delegated proxy next to the job only on request (worker nodes without the CE's control dir).
    runtime_environments: Tuple[str, ...] = ()


def parse_ce_config(table, source="<site config>"):
    """The `[ce]` table (a dict) as a CeConfig; SiteConfigError naming `source` and the key."""
    def fail(msg):
        raise SiteConfigError(f"{source}: {msg}")

    if not isinstance(table, dict):
        fail("[ce] must be a table")
    unknown = sorted(set(table) - set(CeConfig.__dataclass_fields__))
    if unknown:
        fail(f"unknown key 'ce.{unknown[0]}'")
    url, queue = table.get("url"), table.get("queue")
    delegate, rtes = table.get("delegate", True), table.get("runtime_environments", [])
    if not isinstance(url, str) or not re.fullmatch(r"https://[^\s/]+(/\S*)?", url):
        fail("'ce.url' must be the CE's https:// endpoint, like https://ce.example.org:443/arex")
    if queue is not None and (not isinstance(queue, str) or not re.fullmatch(r"[\w.+-]+", queue)):
        fail("'ce.queue' must be a queue name")
    if not isinstance(delegate, bool):
        fail("'ce.delegate' must be true or false")
    if not isinstance(rtes, list) or not all(isinstance(r, str) and re.fullmatch(r"[\w.+/-]+", r) for r in rtes):
        fail("'ce.runtime_environments' must be a list of runtime environment names, like [\"ENV/PROXY\"]")
    return CeConfig(url=url.rstrip("/"), queue=queue, delegate=delegate, runtime_environments=tuple(rtes))
