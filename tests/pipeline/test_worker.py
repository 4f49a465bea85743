"""The batch worker on real Redis, PostgreSQL and Celery: retries then dead letters, refuses a dead database at
start, splits a poison record out of its batch, and replays of the dead letters deliver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pipeline_helpers import CuttableProxy, Worker, count_rows, drop_table, pipeline_env, service_env, wait_until

from flocklog.pipeline.protocol import encode_batch
from flocklog.pipeline.record import ExecutionRecord
from flocklog.pipeline.transports import QUEUE, TASK_NAME, SpoolTransport

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
DEAD_PG = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1


@pytest.fixture
def table(postgres_dsn: str) -> Iterator[str]:
    name = f"flk_worker_{uuid.uuid4().hex[:10]}"
    yield name
    drop_table(postgres_dsn, name)


def _record(message: str, **fields: object) -> ExecutionRecord:
    # Built directly, as an older version's spool would hold it: no log()-time checks.
    return ExecutionRecord(level=20, message=message, logger="t", fields=dict(fields), ts=datetime.now(timezone.utc))


def _send(broker: str, records: list[ExecutionRecord] | str | list[dict[str, object]]) -> None:
    """One batch onto the logs queue, as a producer's CeleryTransport sends it (``encode_batch``), or exactly the
    argument given (a text, or the list of ``to_wire()`` dicts producers of an older version send)."""
    from celery import Celery

    if isinstance(records, list) and all(isinstance(r, ExecutionRecord) for r in records):
        batch: object = encode_batch([r for r in records if isinstance(r, ExecutionRecord)])
    else:
        batch = records
    app = Celery("test-producer", broker=broker, set_as_current=False)
    try:
        app.send_task(TASK_NAME, args=[batch], kwargs={"batch_id": uuid.uuid4().hex}, queue=QUEUE)
    finally:
        app.close()


def _ready(log: Path) -> bool:
    return log.exists() and " ready." in log.read_text(errors="replace")


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flocklog.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _refused(tmp_path: Path) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = []
    for path in sorted((tmp_path / "dead").glob("*.refused")):
        entries += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return entries


def test_a_batch_whose_database_stays_down_is_dead_lettered_after_all_retries_and_replay_delivers_it(
    tmp_path: Path, redis_url: str, postgres_dsn: str, table: str
) -> None:
    pg_port = int(postgres_dsn.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = CuttableProxy(pg_port)
    proxy.start()
    via_proxy = postgres_dsn.replace(f":{pg_port}/", f":{proxy.port}/")
    env = service_env(
        tmp_path, redis_url, via_proxy, table, FLOCKLOG_TASK_RETRY_DELAY="0.05", FLOCKLOG_TASK_MAX_RETRIES="8"
    )
    log = tmp_path / "worker.log"
    worker = Worker(env, log, concurrency=1)
    worker.start()
    try:
        assert wait_until(lambda: _ready(log), timeout=120), log.read_text()[-3000:]
        proxy.cut()  # the database goes away after the worker started
        batch = [_record("charged", i=i) for i in range(20)]
        _send(redis_url, batch)
        dead = tmp_path / "dead"
        assert wait_until(lambda: bool(list(dead.glob("*.batch"))), timeout=180, interval=0.5), log.read_text()[-3000:]
        retries = log.read_text().count("retry: Retry in")
        assert retries == 8, f"FLOCKLOG_TASK_MAX_RETRIES=8 retries expected, saw {retries}"
        (parked,) = dead.glob("*.batch")
        assert {json.loads(line)["id"] for line in parked.read_text().splitlines()} == {str(r.id) for r in batch}
        assert count_rows(postgres_dsn, table)[0] == 0

        proxy.restore()  # the database is back: one command delivers the dead letters
        replay = _cli(env, "spool", "replay", "--spool-dir", str(dead), "--to", "celery")
        assert replay.returncode == 0, replay.stderr
        assert wait_until(lambda: count_rows(postgres_dsn, table) == (20, 20), timeout=120, interval=0.5)
        assert not list(dead.glob("*.batch"))
    finally:
        worker.stop()
        proxy.close()


def test_the_worker_stores_every_batch_format_and_keeps_a_malformed_row_aside(
    tmp_path: Path, redis_url: str, postgres_dsn: str, table: str
) -> None:
    """A list of to_wire() dicts (older producers), a format-1 text with a malformed row, a format-2 (packed) text."""
    env = service_env(tmp_path, redis_url, postgres_dsn, table)
    log = tmp_path / "worker.log"
    worker = Worker(env, log, concurrency=1)
    worker.start()
    try:
        assert wait_until(lambda: _ready(log), timeout=120), log.read_text()[-3000:]
        _send(redis_url, [_record("older producer", i=i).to_wire() for i in range(10)])
        compact = json.loads(encode_batch([_record("compact", i=i) for i in range(10)], version=1))
        compact["rows"].insert(4, ["not-a-uuid", 1.0, 20, "t", "malformed", {}, "h", 1])
        _send(redis_url, json.dumps(compact))
        packed = encode_batch([_record("packed", i=i) for i in range(10)])
        assert json.loads(packed)["v"] == 2
        _send(redis_url, packed)
        assert wait_until(lambda: count_rows(postgres_dsn, table) == (30, 30), timeout=120), log.read_text()[-3000:]
        assert wait_until(lambda: len(_refused(tmp_path)) == 1, timeout=60), log.read_text()[-3000:]
        (entry,) = _refused(tmp_path)
        assert entry["record"] == compact["rows"][4] and "not an execution-log record" in str(entry["reason"])
    finally:
        worker.stop()


def test_a_batch_the_compact_format_cannot_encode_is_sent_as_before_and_only_its_bad_record_kept_aside(
    tmp_path: Path, redis_url: str, postgres_dsn: str, table: str
) -> None:
    """A record that skipped ``build`` (built directly, an older version's spool) may hold NaN or a datetime.

    The compact encoder refuses those; the send raised ``broker unreachable`` for it, so the batch spooled and
    blocked every later spooled batch at each replay. It goes in the older list format instead: the worker
    stores the good records and keeps the bad one aside.
    """
    from flocklog.pipeline.transports import CeleryTransport

    env = service_env(tmp_path, redis_url, postgres_dsn, table)
    log = tmp_path / "worker.log"
    worker = Worker(env, log, concurrency=1)
    worker.start()
    records = [_record("good", i=i) for i in range(9)]
    records.insert(3, _record("not finite", ratio=float("nan")))
    transport = CeleryTransport(redis_url)
    try:
        assert wait_until(lambda: _ready(log), timeout=120), log.read_text()[-3000:]
        transport.send(records)
        assert wait_until(lambda: count_rows(postgres_dsn, table) == (9, 9), timeout=120), log.read_text()[-3000:]
        assert wait_until(lambda: len(_refused(tmp_path)) == 1, timeout=60), log.read_text()[-3000:]
        (entry,) = _refused(tmp_path)
        assert entry["record"]["message"] == "not finite", entry  # type: ignore[index]  # a JSON object
    finally:
        transport.close()
        worker.stop()


@pytest.mark.parametrize("how", ["flocklog worker", "celery -A"])
def test_a_worker_whose_database_is_unreachable_refuses_to_start_in_one_line(
    tmp_path: Path, redis_url: str, table: str, how: str
) -> None:
    env = service_env(tmp_path, redis_url, DEAD_PG, table)
    if how == "flocklog worker":
        args = [sys.executable, "-m", "flocklog.cli", "worker", "--pool", "solo"]
    else:
        args = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "flocklog.pipeline.celery_app",
            "worker",
            "-Q",
            QUEUE,
            "-P",
            "solo",
        ]
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=30)
        pytest.fail("the worker started (and would ack every batch into nothing) with an unreachable database")
    assert proc.returncode == 1
    lines = [line for line in stderr.splitlines() if "refusing to start" in line]
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0], stderr
    assert "Traceback" not in stderr, stderr


POISON = {
    "nul": {"message": "nul \x00 here"},
    "nul-field": {"message": "fine", "note": "nul \x00 in a field"},
    "surrogate": {"message": "lone \ud800 surrogate"},
    "surrogate-field": {"message": "fine", "note": "lone \udc00 in a field"},
}


def _poison_spool(directory: Path, good: int, poison_every: int) -> tuple[list[ExecutionRecord], list[ExecutionRecord]]:
    """One spool file of ``good`` valid records with a poison one after every ``poison_every`` of them."""
    kinds = list(POISON.values())
    records: list[ExecutionRecord] = []
    bad: list[ExecutionRecord] = []
    for i in range(good):
        records.append(_record("ok", i=i))
        if i % poison_every == poison_every - 1:
            spec = dict(kinds[len(bad) % len(kinds)])
            record = _record(str(spec.pop("message")), **spec)
            bad.append(record)
            records.append(record)
    SpoolTransport(directory).send(records)
    return [r for r in records if r not in bad], bad


def test_replaying_a_spool_with_poison_records_to_celery_stores_every_good_row_and_keeps_the_bad_aside(
    tmp_path: Path, redis_url: str, postgres_dsn: str, table: str
) -> None:
    _, bad = _poison_spool(tmp_path / "old-spool", good=196, poison_every=49)
    assert len(bad) == 4
    env = service_env(tmp_path, redis_url, postgres_dsn, table)
    log = tmp_path / "worker.log"
    worker = Worker(env, log, concurrency=1)
    worker.start()
    try:
        replay = _cli(env, "spool", "replay", "--spool-dir", str(tmp_path / "old-spool"), "--to", "celery")
        assert replay.returncode == 0, replay.stderr
        assert "replayed 200" not in replay.stdout  # handing to the broker is not storing
        assert wait_until(lambda: len(_refused(tmp_path)) == 4, timeout=120, interval=0.5), log.read_text()[-3000:]
        assert wait_until(lambda: count_rows(postgres_dsn, table) == (196, 196), timeout=60, interval=0.5)
        refused = _refused(tmp_path)
        assert sorted(str(e["record"]["id"]) for e in refused) == sorted(str(r.id) for r in bad)  # type: ignore[index]  # JSON objects
        assert all("refused" in str(e["reason"]) for e in refused)
        assert "retry" not in log.read_text().lower(), "a refusal is not a reason to retry"
    finally:
        worker.stop()


def test_replaying_direct_stores_past_a_poison_file_and_keeps_going(
    tmp_path: Path, postgres_dsn: str, table: str
) -> None:
    spool = tmp_path / "spool"
    _, bad = _poison_spool(spool, good=50, poison_every=25)  # the oldest file holds the poison
    later = [_record("later", i=i) for i in range(30)]
    SpoolTransport(spool).send(later)
    env = service_env(tmp_path, "redis://127.0.0.1:1/0", postgres_dsn, table)
    replay = _cli(env, "spool", "replay", "--to", "direct")
    assert replay.returncode == 0, replay.stderr
    assert count_rows(postgres_dsn, table) == (80, 80)
    assert not list(spool.glob("*.batch")), "nothing may stay blocked behind the poison file"
    assert sorted(str(e["record"]["id"]) for e in _refused(tmp_path)) == sorted(str(r.id) for r in bad)  # type: ignore[index]  # JSON objects
    assert "2 refused" in replay.stdout


@pytest.mark.parametrize("broker", [None, "redis://127.0.0.1:6379/0"])
def test_importing_the_celery_app_module_creates_nothing_and_builds_no_app(tmp_path: Path, broker: str | None) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    env = pipeline_env({k: v for k, v in os.environ.items() if not k.startswith("FLOCKLOG_")})
    if broker:
        env["FLOCKLOG_BROKER_URL"] = broker
    probe = (
        "import flocklog.pipeline.celery_app as m\n"
        "from kombu.transport import redis as r\n"
        "assert '_app' in vars(m) and m._app is None, 'an app was built at import'\n"
        "assert not getattr(r.Channel._connparams, 'flocklog_guarded', False), 'kombu was patched at import'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=empty, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in empty.rglob("*")) == []


def test_the_embedded_broker_keeps_its_control_folder_under_its_own_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flocklog.pipeline.celery_app import broker_options

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLOCKLOG_BROKER_DIR", str(tmp_path / "broker"))
    options = broker_options("filesystem://")
    assert Path(options["control_folder"]) == tmp_path / "broker" / "control"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broker"]
