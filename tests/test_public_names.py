"""The public surface, pinned: a refactor cannot silently drop (or add) a name users import."""

from __future__ import annotations

import importlib

import pytest

PUBLIC: dict[str, list[str]] = {
    "flocklog": [
        "ConcurrentRotatingFileHandler",
        "ConcurrentTimedRotatingFileHandler",
        "ConfigError",
        "ExecutionLogHandler",
        "ExecutionLogger",
        "FlocklogError",
        "Formatter",
        "FrameError",
        "HubError",
        "HubHandler",
        "JSONFormatter",
        "PipelineError",
        "RotatingFileHandler",
        "SerializationError",
        "StoreError",
        "TimedRotatingFileHandler",
        "__version__",
        "configure",
        "make_formatter",
    ],
    "flocklog.errors": [
        "ConfigError",
        "FlocklogError",
        "FrameError",
        "HubError",
        "PipelineError",
        "SerializationError",
        "StoreError",
    ],
    "flocklog.files": [
        "ConcurrentRotatingFileHandler",
        "ConcurrentTimedRotatingFileHandler",
        "LogDirectoryNotFoundError",
        "RotatingFileHandler",
        "TimedRotatingFileHandler",
    ],
    "flocklog.formatting": ["Formatter", "JSONFormatter", "STANDARD_ATTRIBUTES", "make_formatter"],
    "flocklog.hub": ["Hub", "HubHandler", "query_status", "start_hub"],
    "flocklog.hub.sinks": [
        "OTLPHandler",
        "SinkHandler",
        "StdoutHandler",
        "SyslogHandler",
        "sink_stats",
        "stdout_config",
    ],
    "flocklog.pipeline": ["ExecutionLogHandler", "ExecutionLogger", "ExecutionRecord"],
    "flocklog.record": ["DEFAULT_MAX_RECORD_BYTES", "ExecutionRecord", "HOST", "MAX_DEPTH", "MAX_INT_BITS"],
    "flocklog.stamps": [
        "Ledger",
        "MARK",
        "ParsedStamp",
        "RUN_RE",
        "STAMP_RE",
        "Stamp",
        "StampFilter",
        "WRITER_RE",
        "check_ids",
        "format_stamp",
        "main",
        "parse_stamp",
        "payload_of",
        "read_ledger",
        "stamped_logger",
        "write_stamped",
    ],
    "flocklog.store": [
        "DEFAULT_DATABASE_URL",
        "DEFAULT_TABLE",
        "RecordRefused",
        "Store",
        "WIRE_TS_RANGE",
        "WriteOutcome",
        "open_store",
        "redact",
        "resolve_database_url",
        "resolve_table",
        "sqlite_path",
        "write_isolated",
    ],
    "flocklog.verify": [
        "FileReport",
        "Report",
        "VerifyOptions",
        "WriterReport",
        "collect_files",
        "read_expect_file",
        "render_report",
        "verify_paths",
    ],
    "flocklog.contrib.celery": ["CeleryLogging", "setup"],
    "flocklog.contrib.django": ["DJANGO_FORMAT", "logging_settings", "read_settings"],
    "flocklog.contrib.gunicorn": ["GunicornHooks", "hooks"],
    "flocklog.contrib.uvicorn": ["attach", "files_config", "log_config", "main"],
    "flocklog.contrib.uwsgi": ["UwsgiLogging", "hub_config", "install", "postfork"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_are_pinned_and_importable(module: str) -> None:
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == PUBLIC[module], f"{module}.__all__ changed: update PUBLIC and the CHANGELOG"
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing, f"{module} exports names it does not define: {missing}"
