"""Adler32, the checksum every SE and the catalog agree on, as 8 lowercase hex digits."""
import zlib

CHUNK = 1 << 20   # 1 MiB: large enough that zlib releases the GIL and runs at memory speed


def format_adler32(value):
    """An adler32 integer as the 8-hex text the catalog and SEs use."""
    return f"{value & 0xFFFFFFFF:08x}"


def normalize_adler32(text):
    """SEs print adler32 with or without leading zeros and in either case; make it canonical."""
    text = (text or "").strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    return text.zfill(8)


def adler32_file(path, chunk=CHUNK):
    """The adler32 of a local file."""
    value = 1
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            value = zlib.adler32(block, value)
    return format_adler32(value)
