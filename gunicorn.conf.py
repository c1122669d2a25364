"""gunicorn settings for Vigil: `gunicorn -c gunicorn.conf.py` serves `backend:create_app()`.

Read from the environment: `VIGIL_BIND` (default 127.0.0.1:8000, behind the reverse proxy),
`VIGIL_WORKERS` (default 2 × cores + 1, at most 16) and `PROMETHEUS_MULTIPROC_DIR`, where the
workers keep their metrics for `/metrics` to add up (default: a folder of this master's own
under the system's temporary folder).
"""

import os
import tempfile
from pathlib import Path

wsgi_app = "backend:create_app()"
bind = os.environ.get("VIGIL_BIND", "127.0.0.1:8000")
# Sync workers: each request holds one database connection, so more workers than this mostly
# queue on PostgreSQL's connections and SQLite's write lock.
workers = int(os.environ.get("VIGIL_WORKERS") or min(2 * (os.cpu_count() or 1) + 1, 16))
# A 5,000-record sync push takes a few seconds; a request still running after this is stuck.
timeout = 60
# On SIGTERM or a reload, a worker may finish what it is answering.
graceful_timeout = 30
keepalive = 5
# The app logs each request itself, by route and without the query string.
accesslog = None
# gunicorn's own lines (workers booted, timeouts) as JSON beside the app's, when the app logs JSON
# (backend/logs.py: VIGIL_LOG_FORMAT, else JSON in production). The formatter is configured
# here, not imported from backend, which the master must not import before on_starting. Each
# worker's app puts its own handler on the root logger.
if (os.environ.get("VIGIL_LOG_FORMAT")
        or ("json" if os.environ.get("VIGIL_ENV") == "production" else "text")) == "json":
    logconfig_dict = {
        "version": 1, "disable_existing_loggers": False,
        "root": {"level": "INFO", "handlers": []},
        "formatters": {"json": {
            "()": "pythonjsonlogger.json.JsonFormatter", "fmt": "{levelname}{name}{message}",
            "style": "{", "timestamp": "time",
            "rename_fields": {"levelname": "level", "name": "logger"}}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "loggers": {"gunicorn.error": {"level": "INFO", "handlers": ["stderr"],
                                       "propagate": False}},
    }
# Set before any worker imports prometheus-client, which reads it once at import.
METRICS_DIR = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(
    Path(tempfile.gettempdir()) / f"vigil-metrics-{os.getpid()}")))


def on_starting(server):
    """Start with no counts: files left by an earlier master would add to this one's."""
    METRICS_DIR.mkdir(parents=True, exist_ok=True)
    for left in METRICS_DIR.glob("*.db"):
        left.unlink()


def child_exit(server, worker):
    """Drop a dead worker's live gauges; its counters stay in the sum."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
