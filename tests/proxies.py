"""A loopback TCP proxy in front of a real server (an XRootD SE, `sbk serve`), for faults the
real thing cannot be asked for: a door that goes silent mid-transfer, a slow network.

    TcpProxy(upstream_port)                           passes everything
    TcpProxy(upstream_port, stall_after=N, direction="up")   goes silent for good once N bytes
                                                      went that way (the rest is swallowed,
                                                      connections held open)
    TcpProxy(upstream_port, rate=R)                   at most R bytes/s each way, per connection
"""
import socket
import threading
import time

CHUNK = 1 << 16


class TcpProxy:
    def __init__(self, upstream_port, stall_after=None, direction="down", rate=None):
        assert direction in ("up", "down")
        self.upstream_port, self.stall_after, self.direction, self.rate = upstream_port, stall_after, direction, rate
        self.moved = 0                  # bytes that went `direction`
        self.stalled = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="test-proxy", daemon=True).start()

    def url(self, path, scheme="root"):
        """`scheme://127.0.0.1:<proxy port>/<absolute path>` (root:// takes the path after a `/`)."""
        return f"{scheme}://127.0.0.1:{self.port}/{path}"

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:   # the server behind is down: so is the door
                client.close()
                continue
            self.held += [client, upstream]
            for src, dst, way in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pump, args=(src, dst, way == self.direction),
                                 name="test-proxy-pump", daemon=True).start()

    def _pump(self, src, dst, counted):
        began, sent = time.monotonic(), 0
        while True:
            try:
                data = src.recv(CHUNK if self.rate is None else min(CHUNK, max(1024, int(self.rate / 10))))
            except OSError:
                return
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if counted:
                with self._lock:
                    self.moved += len(data)
                    if self.stall_after is not None and self.moved > self.stall_after:
                        self.stalled.set()
            if self.stalled.is_set():
                continue   # "accepts and never answers" from now on
            if self.rate is not None:   # hold the pace: sent bytes never run ahead of rate x time
                sent += len(data)
                ahead = sent / self.rate - (time.monotonic() - began)
                if ahead > 0:
                    time.sleep(ahead)
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self):
        if self.sock.fileno() != -1:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
        for s in self.held:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
