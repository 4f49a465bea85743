"""Django integration: add ``flocklog.contrib.django`` to INSTALLED_APPS and describe it in ``FLOCKLOG``.

:func:`logging_settings` returns a ``LOGGING`` dict for those who prefer Django's own logging set-up.
"""

from __future__ import annotations

from flocklog.contrib.django.conf import DJANGO_FORMAT, logging_settings, read_settings

__all__ = ["DJANGO_FORMAT", "logging_settings", "read_settings"]
