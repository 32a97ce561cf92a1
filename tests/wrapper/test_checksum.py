"""adler32: zlib-ng's SIMD code when installed, the standard library's zlib otherwise, same values."""
import importlib
import os
import sys
import zlib

import wrapper.checksum as checksum


def test_adler32_with_and_without_zlib_ng_agree(tmp_path, monkeypatch):
    path = tmp_path / "data"
    data = os.urandom(3 * checksum.CHUNK + 12345)
    path.write_bytes(data)
    expected = f"{zlib.adler32(data) & 0xffffffff:08x}"
    assert checksum.adler32_file(path) == expected
    monkeypatch.setitem(sys.modules, "zlib_ng", None)          # a node without zlib-ng
    monkeypatch.setitem(sys.modules, "zlib_ng.zlib_ng", None)
    fallback = importlib.reload(checksum)
    try:
        assert fallback.adler32_update is zlib.adler32
        assert fallback.adler32_file(path) == expected
    finally:
        monkeypatch.undo()
        importlib.reload(checksum)
    assert checksum.adler32_update is not zlib.adler32         # zlib-ng again where installed
