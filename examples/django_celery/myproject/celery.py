"""The Celery app: broker settings from Django's settings (CELERY_*), logging from flocklog in one call."""

import os

from celery import Celery
from django.conf import settings

from flocklog.contrib.celery import setup

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myproject.settings")

app = Celery("myproject")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# 'hub' (default): the main worker process owns logs/celery.log, the 4 prefork children send to it.
# FLOCKLOG_MODE=files: every process writes logs/celery.log directly through flocklog's handler.
setup(
    app,
    mode=os.environ.get("FLOCKLOG_MODE", "hub"),
    log_file=settings.BASE_DIR / "logs" / "celery.log",
    when="M",  # a new file every minute...
    backup_count=5,  # ...and the five newest archives kept
)
