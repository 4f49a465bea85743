"""``manage.py cleanup_audit_logs``: execution-log retention for projects that schedule jobs through Django."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    """Same rules as ``flocklog cleanup``; the URL comes from --database, FLOCKLOG["DATABASE_URL"], env, default."""

    help = "Delete old flocklog execution-log rows in short batches (drops whole daily partitions on PostgreSQL)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=float, default=None, help="Delete rows older than N days (default 365).")
        parser.add_argument("--keep", type=int, default=None, help="Keep only the newest N rows.")
        parser.add_argument("--dry-run", action="store_true", help="Count what would go; delete nothing.")
        parser.add_argument("--database", default=None, help="Store URL (postgresql://... or sqlite:///...).")
        parser.add_argument("--batch-size", type=int, default=5000)
        parser.add_argument("--table", default=None, help="Default: $FLOCKLOG_TABLE, then flocklog_execution_log.")

    def handle(self, *args: Any, **options: Any) -> None:
        from flocklog.errors import FlocklogError
        from flocklog.store import resolve_database_url
        from flocklog.store.cleanup import cleanup

        days, keep = options["days"], options["keep"]
        if days is None and keep is None:
            days = 365
        configured = getattr(settings, "FLOCKLOG", None) or {}
        url = resolve_database_url(options["database"] or configured.get("DATABASE_URL"))
        try:
            result = cleanup(
                url,
                days=days,
                keep=keep,
                dry_run=options["dry_run"],
                batch_size=options["batch_size"],
                table=options["table"],
            )
        except FlocklogError as exc:
            raise CommandError(str(exc)) from exc
        verb = "would delete" if result.dry_run else "deleted"
        count = result.matched if result.dry_run else result.deleted
        self.stdout.write(f"{verb} {count} rows from {result.table} ({result.dialect})")
        for method in result.methods:
            self.stdout.write(
                f"  {method.method}: matched {method.matched}, deleted {method.deleted}, batches {method.batches}"
            )
        if result.partitions_dropped:
            label = "partitions to drop" if result.dry_run else "partitions dropped"
            self.stdout.write(f"  {label}: {', '.join(result.partitions_dropped)}")
