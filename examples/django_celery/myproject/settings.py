"""Settings of the example: no database, an embedded broker by default, flocklog for logging."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-only-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "flocklog.contrib.django",
    "myapp",
]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
TIME_ZONE = "UTC"  # Django exports TZ; keep log timestamps and rotation boundaries in UTC

(BASE_DIR / "logs").mkdir(exist_ok=True)

# Every Django process (shell, runserver, the Celery worker before Celery takes over) writes the same rotating
# set directly; flocklog's handler is safe for any number of processes.
FLOCKLOG = {
    "MODE": "files",
    "LOG_FILE": BASE_DIR / "logs" / "celery.log",
    "WHEN": "M",
    "BACKUP_COUNT": 5,
    "LEVEL": "INFO",
}

# Embedded broker by default: kombu's filesystem transport under ./broker, no server needed.
# Set CELERY_BROKER_URL=redis://127.0.0.1:6379/0 to use Redis instead.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL") or "filesystem://"
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker = BASE_DIR / "broker"
    for _folder in ("queue", "processed"):
        (_broker / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker / "queue"),
        "data_folder_out": str(_broker / "queue"),
        "processed_folder": str(_broker / "processed"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
