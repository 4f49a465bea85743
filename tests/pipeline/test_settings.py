"""The pipeline's environment settings: a typo is one clear error naming the variable, and the broker timeout
reaches every Redis client the pipeline opens."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flocklog import ExecutionLogger
from flocklog.errors import ConfigError
from flocklog.pipeline.transports import CeleryTransport, receipt_client, worker_command


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("FLOCKLOG_BROKER_TIMEOUT", "3s", "is not a number"),
        ("FLOCKLOG_BROKER_TIMEOUT", "0", "of at least"),
        ("FLOCKLOG_BROKER_TIMEOUT", "nan", "must be a finite number"),
        ("FLOCKLOG_BROKER_TIMEOUT", "inf", "must be a finite number"),
        ("FLOCKLOG_RECEIPT_TIMEOUT", "0", "at least 0.1"),
        ("FLOCKLOG_VISIBILITY_TIMEOUT", "-5", "of at least"),
        ("FLOCKLOG_TASK_MAX_RETRIES", "2.5", "is not a whole number"),
        ("FLOCKLOG_RECEIPT_TIMEOUT", "a minute", "is not a number"),
        ("FLOCKLOG_ADOPT_SPOOLS", "maybe", "is not a yes/no value"),
    ],
)
def test_a_bad_setting_is_a_config_error_naming_the_variable_when_the_logger_is_built(
    name: str, value: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"{name}=.*{expected}"):
        ExecutionLogger("t", transport="celery", broker_url=redis_url, spool_dir=tmp_path / "spool")


def test_an_unknown_transport_is_refused_when_the_logger_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="unknown transport 'kafka'"):
        ExecutionLogger("t", transport="kafka", spool_dir=tmp_path / "spool")
    monkeypatch.setenv("FLOCKLOG_TRANSPORT", "rabbit")
    with pytest.raises(ConfigError, match="unknown transport 'rabbit'"):
        ExecutionLogger("t", spool_dir=tmp_path / "spool")


def test_status_refuses_a_bad_setting_instead_of_reporting_the_broker_unreachable(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, tmp_path: Path
) -> None:
    import flocklog.pipeline.celery_app  # noqa: F401  # already built: only status's own check can catch it
    from flocklog.pipeline.status import collect_status

    monkeypatch.setenv("FLOCKLOG_BROKER_TIMEOUT", "-1")
    with pytest.raises(ConfigError, match="FLOCKLOG_BROKER_TIMEOUT"):
        collect_status(broker_url=redis_url, database_url=f"sqlite:///{tmp_path / 'db'}", spool_dir=str(tmp_path))


def test_an_explicit_receipt_timeout_is_checked_too(redis_url: str) -> None:
    for bad in (0, -3, float("inf")):
        with pytest.raises(ConfigError, match="receipt_timeout"):
            CeleryTransport(redis_url, receipt_timeout=bad)


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """A command that should refuse to start: its exit code and output, captured as text."""
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_cli_reports_a_bad_setting_in_one_line_without_a_traceback(tmp_path: Path, redis_url: str) -> None:
    env = dict(os.environ, FLOCKLOG_BROKER_TIMEOUT="soon")
    for command in (["status", "--broker", redis_url], ["worker"]):
        result = _run([sys.executable, "-m", "flocklog.cli", *command], tmp_path, env)
        assert result.returncode == 1, result
        assert result.stderr.strip().splitlines() == ["Error: FLOCKLOG_BROKER_TIMEOUT='soon' is not a number"]


def test_receipt_and_status_clients_wait_no_longer_than_the_broker_timeout(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("FLOCKLOG_BROKER_TIMEOUT", "0.25")
    client = receipt_client(redis_url)
    assert client is not None
    try:
        assert client.ping()
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (0.25, 0.25)
    finally:
        client.close()
    transport = CeleryTransport(redis_url)
    try:
        assert transport.app.conf.broker_connection_timeout == 0.25
        assert transport.app.conf.broker_transport_options["socket_timeout"] == 0.25
    finally:
        transport.close()
    assert receipt_client("filesystem://") is None  # receipts need Redis; other brokers carry none


def test_one_settings_object_reports_every_bad_value_at_once() -> None:
    from flocklog._pipelinesettings import PipelineSettings

    env = {
        "FLOCKLOG_BROKER_TIMEOUT": "soon",
        "FLOCKLOG_TASK_MAX_RETRIES": "-1",
        "FLOCKLOG_MAX_RECORD_BYTES": "10",
        "FLOCKLOG_TRANSPORT": "kafka",
    }
    with pytest.raises(ConfigError) as caught:
        PipelineSettings.from_env(env)
    message = str(caught.value)
    for name in env:
        assert name in message or "unknown transport 'kafka'" in message
    assert message.count(";") == 3  # one clause per bad value
    settings = PipelineSettings.from_env({"FLOCKLOG_RECEIPT_TIMEOUT": "5", "FLOCKLOG_SPOOL_DIR": "/x"})
    assert (settings.receipt_timeout, str(settings.spool_dir), settings.max_record_bytes) == (5.0, "/x", 256 * 1024)


@pytest.mark.parametrize(("value", "expected"), [("", 2), ("2", 2), ("1", 1), ("0", None), ("3", None), ("v2", None)])
def test_the_batch_format_producers_send_is_a_setting_for_rolling_upgrades(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: int | None
) -> None:
    """Workers older than the packed format read only format 1: producers can keep sending it until they are gone."""
    import json

    from flocklog._pipelinesettings import PipelineSettings
    from flocklog.pipeline.transports import CeleryTransport, task_argument
    from flocklog.record import ExecutionRecord

    monkeypatch.setenv("FLOCKLOG_BATCH_FORMAT", value)
    if expected is None:
        with pytest.raises(ConfigError, match="FLOCKLOG_BATCH_FORMAT"):
            PipelineSettings.from_env()
        with pytest.raises(ConfigError, match="FLOCKLOG_BATCH_FORMAT"):
            CeleryTransport("redis://127.0.0.1:1/0")
        return
    assert PipelineSettings.from_env().batch_format == expected
    transport = CeleryTransport("redis://127.0.0.1:1/0")  # nothing connects until a send
    try:
        argument = task_argument([ExecutionRecord.create(20, "m", "app", n=1)], transport.batch_format)
        assert isinstance(argument, str) and json.loads(argument)["v"] == expected
    finally:
        transport.close()


def test_every_old_name_of_the_transports_module_is_still_importable() -> None:
    import flocklog.pipeline.transports as transports
    from flocklog.pipeline import record as old_record
    from flocklog.record import ExecutionRecord

    for name in [
        "SpoolTransport",
        "CeleryTransport",
        "DirectTransport",
        "Transport",
        "make_transport",
        "replay_spool",
        "resolve_spool_dir",
        "env_number",
        "check_at_least",
        "broker_timeout",
        "visibility_timeout",
        "default_receipt_timeout",
        "task_max_retries",
        "receipt_client",
        "transport_kind",
        "check_settings",
        "worker_command",
        "TRANSPORTS",
        "DEFAULT_SPOOL_DIR",
        "TASK_NAME",
        "QUEUE",
        "RECEIPT_PREFIX",
        "CELERY_APP",
        "MIN_RECEIPT_TIMEOUT",
    ]:
        assert hasattr(transports, name), name
    assert old_record.ExecutionRecord is ExecutionRecord


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("off", False), ("No", False), ("1", True), ("", True)])
def test_adopt_spools_is_parsed_once_in_the_settings(value: str, expected: bool) -> None:
    from flocklog._pipelinesettings import PipelineSettings

    assert PipelineSettings.from_env({"FLOCKLOG_ADOPT_SPOOLS": value}).adopt_spools is expected


def test_a_worker_with_a_bad_adopt_spools_value_refuses_to_start_in_one_line(tmp_path: Path, redis_url: str) -> None:
    """``maybe`` once meant "on" (anything but 0/false/no/off did): now both ways of starting a worker refuse it."""
    env = dict(os.environ, FLOCKLOG_ADOPT_SPOOLS="maybe", FLOCKLOG_BROKER_URL=redis_url)
    message = "FLOCKLOG_ADOPT_SPOOLS='maybe' is not a yes/no value"
    flocklog_worker = _run([sys.executable, "-m", "flocklog.cli", "worker"], tmp_path, env)
    assert flocklog_worker.returncode == 1, flocklog_worker
    assert flocklog_worker.stderr.strip().splitlines() == [
        f"Error: {message}: use one of 1, true, yes, on, 0, false, no, off"
    ]
    celery_worker = _run(
        [*worker_command("--pool", "solo"), "--without-gossip", "--without-mingle"], tmp_path, env, timeout=120
    )
    assert celery_worker.returncode != 0 and message in celery_worker.stderr, celery_worker


def test_a_batch_too_large_for_one_task_goes_as_parts_each_with_its_own_receipt_id(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """max_batch (5000) records of max_record_bytes (256 KiB) make over a GB, beyond what Redis takes in one value:
    such a batch goes as parts under MAX_TASK_BYTES, and a resend of the same batch makes the very same parts."""
    import base64
    import json

    import redis

    import flocklog.pipeline.transports as transports
    from flocklog.pipeline.protocol import load_batch
    from flocklog.record import ExecutionRecord

    monkeypatch.setattr(transports, "MAX_TASK_BYTES", 100_000)  # the same rule, at a size a test can afford
    records = [ExecutionRecord.create(20, "x" * 2000, "app", n=i) for i in range(300)]  # ~0.6 MB of text
    transport = transports.CeleryTransport(redis_url)
    client = redis.Redis.from_url(redis_url)
    try:
        for _ in range(2):
            transport.send(records, batch_id="ab" * 16)
        messages = [json.loads(raw) for raw in client.lrange("logs", 0, -1)]
        tasks = [json.loads(base64.b64decode(message["body"])) for message in messages]
        ids = [kwargs["batch_id"] for _, kwargs, _ in tasks]
        texts = [args[0] for args, _, _ in tasks]
        assert len(tasks) >= 2 * 6 and all(len(text) <= 100_000 for text in texts)
        assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids) and "ab" * 16 not in ids
        first, second = ids[len(ids) // 2 :], ids[: len(ids) // 2]  # LPUSH: the newest first
        assert sorted(first) == sorted(second) and len(set(first)) == len(first)  # a resend makes the same parts
        sent = [row[0] for text in texts[: len(texts) // 2] for row in load_batch(text)[0] or []]
        assert sorted(sent) == sorted(r.id.hex for r in records)  # every record once per send, none split apart
        assert set(transport.outstanding) == set(first)
    finally:
        transport.close()
        client.close()
