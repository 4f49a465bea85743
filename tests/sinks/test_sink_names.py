"""The sinks' public names are pinned, and importing them costs no optional extra."""

from __future__ import annotations

import subprocess
import sys

import flocklog.hub.sinks as sinks

PUBLIC = {"OTLPHandler", "SinkHandler", "StdoutHandler", "SyslogHandler", "sink_stats", "stdout_config"}


def test_public_names_are_pinned_and_resolve() -> None:
    assert set(sinks.__all__) == PUBLIC
    for name in PUBLIC - {"OTLPHandler"}:
        assert getattr(sinks, name) is not None


def test_stdout_and_syslog_sinks_import_no_opentelemetry(subprocess_env: dict[str, str]) -> None:
    code = (
        "import sys, flocklog, flocklog.hub.sinks as s; s.StdoutHandler; s.SyslogHandler; s.sink_stats; "
        "assert not [m for m in sys.modules if m.startswith(('opentelemetry', 'grpc'))], 'an extra was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], env=subprocess_env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sink_stats_keys_by_name_and_skips_handlers_without_stats(tmp_path: object) -> None:
    import logging

    named = sinks.StdoutHandler(spool_dir=str(tmp_path))
    named.set_name("out")
    plain = logging.NullHandler()
    unnamed = sinks.StdoutHandler(spool_dir=str(tmp_path) + "-2")
    stats = sinks.sink_stats([named, plain, unnamed])
    assert set(stats) == {"out", "StdoutHandler#2"}
    assert {"sent", "queued", "spooled", "dropped"} <= set(stats["out"])
    named.close()
    unnamed.close()


def test_bad_queue_options_are_config_errors(tmp_path: object) -> None:
    import pytest

    from flocklog.errors import ConfigError

    for bad in ({"queue_size": 0}, {"batch_size": 0}, {"retry_interval": 0}, {"drain_timeout": -1}):
        with pytest.raises(ConfigError):
            sinks.StdoutHandler(spool_dir=str(tmp_path), **bad)
