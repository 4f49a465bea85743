"""The WSGI entry point uWSGI loads; flocklog is installed here, after Django has configured logging.

``install()`` works whether uWSGI imports this module in the master (the default: it then hooks the fork) or in
every worker (``--lazy-apps``). The knobs come from the environment so the README and the tests share one file.
"""

import logging
import os

from django.core.wsgi import get_wsgi_application

from flocklog.contrib.uwsgi import install

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "uwsgi_django.settings")
application = get_wsgi_application()  # Django's dictConfig first: it would close a handler installed before it

install(
    mode=os.environ.get("FLOCKLOG_MODE", "files"),  # "hub": send to a 'flocklog serve' at $FLOCKLOG_HUB_ADDRESS
    log_file=os.environ.get("LOG_FILE", "logs/app.log"),
    when=os.environ.get("LOG_WHEN", "midnight"),  # "none": rotate by size only (set LOG_MAX_BYTES)
    max_bytes=int(os.environ.get("LOG_MAX_BYTES", "0")),
    backup_count=int(os.environ.get("LOG_BACKUPS", "7")),
)
logging.getLogger("uwsgi_django").info("worker ready")
