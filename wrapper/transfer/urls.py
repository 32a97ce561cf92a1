"""What a transfer's URL names: a local path (plain or file://) or a remote URL, root:// or other."""
import os
import urllib.parse


def is_local(url):
    """A plain path or a file:// URL."""
    return urllib.parse.urlsplit(str(url)).scheme in ("", "file")


def plain_path(url):
    """A local URL as a path (file:// taken off)."""
    url = str(url)
    return urllib.parse.urlsplit(url).path if url.startswith("file://") else url


def file_url(path):
    """A local path as a file:// URL (what gfal2 and gfal-copy take)."""
    path = str(path)
    return path if path.startswith("file://") else "file://" + os.path.abspath(path)


def is_root(url):
    """An XRootD URL (root:// or xroot://)."""
    return str(url).startswith(("root://", "xroot://"))
