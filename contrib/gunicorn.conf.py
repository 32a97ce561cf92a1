"""An example gunicorn configuration for sbk: what `sbk serve` sets up, for a gunicorn of your own.

    gunicorn -c contrib/gunicorn.conf.py 'server:create_app()'

with the server's settings in the environment (SBK_DB, SBK_PUBLIC_URL, SBK_LOG_FORMAT, ...: the
README's "Running the server"; contrib/sbk.env). A deployment that follows it has:
- two workers of four threads each on 127.0.0.1:8080 (`-w 4 -b 0.0.0.0:8080` on the command line
  for others);
- the schema created or upgraded once, by the master, before any worker starts (the workers skip it);
- the reaper (silent jobs -> timeout 100) and the removal requests' cleaner as threads of the master,
  one per server however many workers; each worker runs its own batch poller (batch jobs that ended
  without a report, automatic retries, follow-up stages) from its first request on;
- Prometheus counters summed over the workers at /metrics: PROMETHEUS_MULTIPROC_DIR (default
  $RUNTIME_DIRECTORY/metrics under systemd, else a directory in the system's temp dir), emptied at
  start, each exited worker marked dead;
- every log line in SBK_LOG_FORMAT (text, or json for a log shipper): gunicorn's own and the app's
  one line per request. The same server as a systemd service: contrib/sbk.service; the cron lines
  for `sbk reap`, `sbk poll` and `sbk cleanup`: contrib/sbk.cron.
"""
import os
import tempfile

bind = "127.0.0.1:8080"   # the command line's -b and -w win over these two
workers = 2
# Threaded workers: wrappers report over the WAN, and a sync worker waits on each connection a slow
# client opened and has not written to yet (make bench-scale, paced clients: pages p50 842 ms with
# 2 sync workers, 10 ms with 2 x 4 threads). Sync workers are faster on loopback, but only behind a
# buffering proxy (nginx) that hands them whole requests: there, `worker_class = "sync"`.
worker_class = "gthread"
threads = 4
timeout = 60
accesslog = None                               # the app logs each request itself, with its request id
logger_class = "server.logs.GunicornLogger"    # gunicorn's own lines in SBK_LOG_FORMAT

# prometheus-client reads this when it is first imported, which `logger_class` above is about to do.
_runtime = os.environ.get("RUNTIME_DIRECTORY")   # systemd's RuntimeDirectory=
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", os.path.join(_runtime, "metrics") if _runtime else
                      os.path.join(tempfile.gettempdir(), f"sbk-metrics-{os.getuid()}"))

_serving = {"settings": None, "threads": []}


def on_starting(server):
    """The master, before any worker: the schema, the logs, the metrics directory."""
    from server import cli
    _serving["settings"] = cli.prepare_to_serve()
    os.environ["SBK_AUTO_INIT"] = "false"   # the workers' create_app() leave the schema to the master


def when_ready(server):
    """The master's threads, once it listens."""
    from server import cli
    _serving["threads"] = cli.start_housekeeping(_serving["settings"])


def child_exit(server, worker):
    from server import metrics
    metrics.worker_exited(server, worker)


def on_exit(server):
    for thread in _serving["threads"]:
        thread.stop()
