"""``manage.py cleanup_execution_logs``: the same command as ``cleanup_audit_logs``, under the one name flocklog
uses for these records everywhere else (``ExecutionLogger``, "execution log"); both names stay."""

from __future__ import annotations

from flocklog.contrib.django.management.commands.cleanup_audit_logs import Command as _AuditCommand

__all__ = ["Command"]


class Command(_AuditCommand):
    """``cleanup_audit_logs`` by the execution-log name: same options, same rules as ``flocklog cleanup``."""
