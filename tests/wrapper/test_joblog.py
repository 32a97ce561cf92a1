"""Log upload: tarball to the SE and the catalog; to the server, tail kept when over its cap."""
import io
import os
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.errors import LogUploadError
from wrapper.client import ServerClient
from wrapper.joblog import upload_log
from .conftest import closed_port, lfn, make_area, site_for


class LogSink:
    """The PUT /jobs/<id>/log route of PROTOCOL.md over the stdlib HTTP server: stores, or 413."""

    def __init__(self, cap):
        self.cap = cap
        self.bodies = []
        self.paths = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sink.paths.append(self.path)
                if len(body) > sink.cap:
                    self.send_response(413)
                    reply = b'{"error": "log-too-large", "message": "over the cap"}'
                else:
                    sink.bodies.append(body)
                    self.send_response(200)
                    reply = b'{"stored": %d}' % len(body)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def sink():
    s = LogSink(cap=64 * 1024)
    yield s
    s.close()


def log_files(ctx, big=False):
    (ctx.workdir / "severus.log").write_text("wrapper log line\n" * 100)
    # Random digests: a payload's output that does not compress away under the cap.
    (ctx.workdir / "payload.out").write_text("".join(f"event {i} done {os.urandom(16).hex()}\n"
                                                     for i in range(10000 if big else 10)))
    (ctx.workdir / "journal.jsonl").write_text('{"seq": 1}\n')
    return [ctx.workdir / n for n in ("severus.log", "payload.out", "journal.jsonl", "missing.err")]


def members(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


@pytest.mark.parametrize("scheme", ["root", "direct"])
def test_log_tarball_goes_to_the_se_and_the_catalog(area, catalog, make_site, make_ctx, scheme):
    ctx = make_ctx(site_for(make_site, area, scheme))
    files = log_files(ctx)
    stored = upload_log(ctx, files, catalog=catalog)
    assert stored.lfn == lfn("out/run1/log/10000003.1.log.tgz")
    content = members((area.path / "out/run1/log/10000003.1.log.tgz").read_bytes())
    assert sorted(content) == ["journal.jsonl", "payload.out", "severus.log"]
    assert content["payload.out"] == files[1].read_bytes()
    assert catalog.replicas(stored.lfn).adler32 == stored.adler32


def test_log_to_db_keeps_the_tail_when_over_the_cap(area, catalog, make_site, make_ctx, sink):
    site = site_for(make_site, area, "root")
    ctx = make_ctx(site, server=ServerClient(sink.url, "job-token"), log={"to_db": True})
    files = log_files(ctx, big=True)
    upload_log(ctx, files, catalog=catalog, max_db_bytes=1024 * 1024)
    assert sink.paths[-1] == "/api/v1/jobs/7/log?attempt=1"
    sent = members(sink.bodies[-1])
    assert len(sink.bodies[-1]) <= sink.cap
    assert b"event 9999 done" in sent["payload.out"].splitlines()[-1]   # the end survives
    assert b"event 0 done" not in sent["payload.out"] and b"bytes cut" in sent["payload.out"]
    # The SE copy is whole.
    whole = members((area.path / "out/run1/log/10000003.1.log.tgz").read_bytes())
    assert whole["payload.out"] == files[1].read_bytes()


def test_log_upload_failure_is_050(catalog, make_site, make_ctx):
    dead = f"root://127.0.0.1:{closed_port()}//nowhere"
    ctx = make_ctx(make_site("SITE-A", urls=[dead], access="protocol"))
    with pytest.raises(LogUploadError) as exc:
        upload_log(ctx, log_files(ctx), catalog=catalog)
    assert exc.value.code == 50


def test_log_goes_to_a_fallback_site(fresh_se, area, catalog, make_site, make_ctx):
    site = site_for(make_site, make_area(fresh_se), "root", name="SITE-A", fallback=["SITE-B"])
    site_for(make_site, area, "http", name="SITE-B")
    fresh_se.stop()
    ctx = make_ctx(site)
    stored = upload_log(ctx, log_files(ctx), catalog=catalog)
    assert stored.site == "SITE-B"
    assert (area.path / "out/run1/log/10000003.1.log.tgz").is_file()
