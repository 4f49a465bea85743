"""Framework integrations: ``django``, ``celery``, ``gunicorn``, ``uwsgi`` and ``uvicorn``, one module each.

Their shared set-up lives in :mod:`flocklog.contrib._setup`; nothing here imports a framework.
"""

from __future__ import annotations

__all__: list[str] = []
