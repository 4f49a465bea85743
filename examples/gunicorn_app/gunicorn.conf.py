"""gunicorn settings: 4 workers, all logging through the hub the master starts (flocklog's hooks)."""

import os

from flocklog.contrib.gunicorn import hooks

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WORKERS", "4"))
accesslog = None  # access lines would bypass the hub; the app logs every request itself

_flocklog = hooks(
    log_file=os.environ.get("LOG_FILE", "logs/app.log"),
    when=os.environ.get("LOG_WHEN", "midnight"),  # "none": rotate by size only (set LOG_MAX_BYTES)
    max_bytes=int(os.environ.get("LOG_MAX_BYTES", "0")),
    backup_count=int(os.environ.get("LOG_BACKUPS", "7")),
)
on_starting = _flocklog.on_starting
post_fork = _flocklog.post_fork
worker_exit = _flocklog.worker_exit
on_exit = _flocklog.on_exit
