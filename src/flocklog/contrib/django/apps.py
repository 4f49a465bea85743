"""The AppConfig behind ``INSTALLED_APPS = [..., "flocklog.contrib.django"]``: configure or attach in ready()."""

from __future__ import annotations

import atexit
from typing import Any

from django.apps import AppConfig
from django.conf import settings

from flocklog.contrib._setup import (
    check_hub_reachable,
    drain_installed,
    hub_handler,
    install_root_handler,
    installed_handlers,
    start_owned_hub,
    startup_errors,
    stop_owned_hub,
)
from flocklog.contrib.django.conf import read_settings


class FlocklogConfig(AppConfig):
    """Reads ``settings.FLOCKLOG`` once per process; see :func:`flocklog.contrib.django.conf.read_settings`."""

    name = "flocklog.contrib.django"
    label = "flocklog"
    verbose_name = "flocklog"
    default = True
    hub: Any = None

    def ready(self) -> None:
        # A misconfiguration stops manage.py / the server process with one line, before it serves anything that
        # would log nowhere; Django would otherwise print the whole app-loading traceback.
        with startup_errors():
            self._configure()

    def _configure(self) -> None:
        conf = read_settings(getattr(settings, "FLOCKLOG", None))
        if not conf.configure or installed_handlers():
            return  # LOGGING does it, or (inside a Celery worker) flocklog.contrib.celery already did
        level = conf.settings.level
        if conf.mode == "files":
            handler = conf.settings.file_handler()
        else:
            address = conf.hub_address
            if conf.start_hub:
                self.hub = start_owned_hub(conf.settings)
                address = self.hub.address
                atexit.register(self._stop_hub)
            assert address is not None
            address = check_hub_reachable(address)
            handler = hub_handler(address, conf.settings)
        # replace=False: inside a Celery worker, flocklog.contrib.celery already set up this process.
        if not install_root_handler(handler, level, replace=False):
            handler.close()

    def _stop_hub(self) -> None:
        drain_installed()
        if self.hub is not None:
            stop_owned_hub(self.hub)
            self.hub = None
