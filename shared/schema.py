"""Typed field readers for the JSON messages both sides exchange.

Each reader takes the mapping, the key and the dotted path used in messages,
and raises SchemaError with one clear sentence naming the field.
"""
import math
import posixpath
import re

# Large enough for any real job, small enough to stay an exact 64-bit integer.
MAX_INT = 2 ** 53


class SchemaError(ValueError):
    """A message does not match its schema; the text names the field."""


_MISSING = object()


def section(data, key, where=""):
    value = data.get(key, _MISSING) if isinstance(data, dict) else _MISSING
    path = f"{where}{key}"
    if value is _MISSING:
        raise SchemaError(f"missing field '{path}'")
    if not isinstance(value, dict):
        raise SchemaError(f"'{path}' must be an object")
    return value


def refuse_unknown(data, allowed, where=""):
    extra = sorted(set(data) - set(allowed))
    if extra:
        raise SchemaError(f"unknown field '{where}{extra[0]}'")


def _get(data, key, where, default):
    if key in data:
        return data[key]
    if default is _MISSING:
        raise SchemaError(f"missing field '{where}{key}'")
    return default


def integer(data, key, where="", default=_MISSING, lo=0, hi=MAX_INT):
    value = _get(data, key, where, default)
    if value is default and default is not _MISSING:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemaError(f"'{where}{key}' must be an integer")
    if not lo <= value <= hi:
        raise SchemaError(f"'{where}{key}' must be between {lo} and {hi}")
    return value


def number(data, key, where="", default=_MISSING, lo=0.0, hi=float(MAX_INT)):
    value = _get(data, key, where, default)
    if value is default and default is not _MISSING:
        return value
    # an int is finite however large (math.isfinite of 10**400 raises OverflowError): the bounds say no
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise SchemaError(f"'{where}{key}' must be a number")
    if not lo <= value <= hi:
        raise SchemaError(f"'{where}{key}' must be between {lo:g} and {hi:g}")
    return float(value)


def text(data, key, where="", default=_MISSING, max_len=4096, pattern=None, empty=False):
    value = _get(data, key, where, default)
    if value is default and default is not _MISSING:
        return value
    if not isinstance(value, str):
        raise SchemaError(f"'{where}{key}' must be a string")
    if not empty and not value:
        raise SchemaError(f"'{where}{key}' must not be empty")
    if len(value) > max_len:
        raise SchemaError(f"'{where}{key}' is longer than {max_len} characters")
    if "\x00" in value:
        raise SchemaError(f"'{where}{key}' contains a NUL character")
    if not _is_text(value):
        raise SchemaError(f"'{where}{key}' is not valid text (a lone surrogate)")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise SchemaError(f"'{where}{key}' has an invalid value {value[:80]!r}")
    return value


def boolean(data, key, where="", default=_MISSING):
    value = _get(data, key, where, default)
    if not isinstance(value, bool):
        raise SchemaError(f"'{where}{key}' must be true or false")
    return value


def text_list(data, key, where="", default=_MISSING, max_items=100000, **kw):
    value = _get(data, key, where, default)
    if value is default and default is not _MISSING:
        return tuple(value)
    if not isinstance(value, list):
        raise SchemaError(f"'{where}{key}' must be a list of strings")
    if len(value) > max_items:
        raise SchemaError(f"'{where}{key}' has more than {max_items} items")
    items = {str(i): v for i, v in enumerate(value)}
    return tuple(text(items, str(i), f"{where}{key}[", **kw) for i in range(len(value)))


def text_map(data, key, where="", default=_MISSING, max_items=1000):
    value = _get(data, key, where, default)
    if value is default and default is not _MISSING:
        return dict(value)
    if not isinstance(value, dict):
        raise SchemaError(f"'{where}{key}' must be an object of strings")
    if len(value) > max_items:
        raise SchemaError(f"'{where}{key}' has more than {max_items} entries")
    for k, v in value.items():
        if not isinstance(v, str) or "\x00" in v or not k or "\x00" in k or not _is_text(k + v):
            raise SchemaError(f"'{where}{key}.{k}' must be a string of valid text")
    return dict(value)


def _is_text(value):
    """JSON may carry a lone surrogate ("\\ud800"): a str that no database or file can store."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


LFN_RE = r"lfn:/[A-Za-z0-9._+=@,:%~/-]*"


def lfn(data, key, where="", default=_MISSING):
    """An LFN: `lfn:/a/b`, no `..`, no empty or dot segments."""
    value = text(data, key, where, default, max_len=1024)
    if value is default:
        return value
    check_lfn(value, f"{where}{key}")
    return value


def check_lfn(value, name="lfn"):
    if not isinstance(value, str) or not re.fullmatch(LFN_RE, value):
        raise SchemaError(f"'{name}' must be an LFN like lfn:/grid/vo/path")
    parts = value[len("lfn:/"):].split("/")
    if any(p in ("..", ".") for p in parts) or "" in parts[:-1]:
        raise SchemaError(f"'{name}' must not contain '..', '.' or empty segments")
    return value


def relative_path(data, key, where="", default=_MISSING):
    """A path that stays below its root: relative, no `..`."""
    value = text(data, key, where, default, max_len=1024)
    if value is default:
        return value
    norm = posixpath.normpath(value)
    if value.startswith("/") or norm == ".." or norm.startswith("../"):
        raise SchemaError(f"'{where}{key}' must be a relative path inside its root")
    return value
