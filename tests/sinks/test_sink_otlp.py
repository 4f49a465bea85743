"""The OTLP sink: writer processes -> hub -> a loopback receiver decoding with opentelemetry-proto, with an outage.

Four writers log through ``flocklog serve``; a fifth is SIGKILLed mid-run; the receiver is stopped for 10 s
mid-run. Every record of the survivors arrives exactly once with its resource and attributes; the killed
writer's records arrive at most once and without holes (what it had not handed to the hub dies with it).
"""

from __future__ import annotations

import collections
import importlib.util
import logging
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from sinkhelpers import check_exactly_once, finish, start_serve, start_writers, wait_for, write_config

from flocklog.stamps import format_stamp, parse_stamp
from service_rules import IN_CI

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed (pip install 'flocklog[otel]')")
from otlpreceiver import Receiver  # imports opentelemetry-proto

from flocklog.hub.sinks import OTLPHandler

HAVE_GRPC = importlib.util.find_spec("grpc") is not None
PROTOCOLS = [
    "http/protobuf",
    pytest.param("grpc", marks=pytest.mark.skipif(not HAVE_GRPC and not IN_CI, reason="no grpcio")),
]
OUTAGE = 10.0


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_record_reaches_the_collector_once_through_an_outage_and_a_killed_writer(
    protocol: str, tmp_path: Path, subprocess_env: dict[str, str], run_id: str
) -> None:
    receiver = Receiver("grpc" if protocol == "grpc" else "http")
    receiver.start()
    sink_spool = tmp_path / "sink"
    handler = {
        "class": "flocklog.hub.sinks.OTLPHandler",
        "endpoint": receiver.endpoint,
        "protocol": protocol,
        "service_name": "hubtest",
        "resource_attributes": {"deployment.environment": "test"},
        "timeout": 10,
        "retry_interval": 0.2,
        "max_retry_interval": 1.0,
        "drain_timeout": 60,
        "spool_dir": str(sink_spool),
    }
    sock = tmp_path / "hub.sock"
    hub = start_serve(write_config(tmp_path, {"otlp": handler}), sock, subprocess_env)
    count = 2500
    try:
        writers = start_writers(f"unix:{sock}", subprocess_env, tmp_path / "spool", run_id, 4, count, pause=0.004)
        victim = start_writers(f"unix:{sock}", subprocess_env, tmp_path / "spool-k", run_id, 1, 10**6, 0.002, "k")[0]
        pids = {f"w{i}": p.pid for i, p in enumerate(writers)} | {"k0": victim.pid}
        wait_for(lambda: receiver.count(f"{run_id} k0 ") >= 200, 120, "the victim's first records at the receiver")
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        receiver.stop()
        wait_for(
            lambda: any(n.endswith(".jsonl") for n in os.listdir(sink_spool)) if sink_spool.is_dir() else False,
            60,
            "the sink to spool while the receiver is down",
        )
        time.sleep(OUTAGE)  # the deliberate outage, not a synchronisation
        receiver.start()
        assert finish(writers) == [count] * 4
        wait_for(lambda: receiver.count(f"{run_id} w") >= 4 * count, 120, "every survivor's record at the receiver")
    finally:
        hub.send_signal(signal.SIGTERM)
        _, err = hub.communicate(timeout=90)
        receiver.stop()
    assert hub.returncode == 0, err
    records = [r for r in receiver.snapshot() if run_id in str(r["body"])]
    survivors = [r for r in records if f"{run_id} w" in r["body"]]
    check_exactly_once((r["body"] for r in survivors), run=run_id, writers={f"w{i}": count for i in range(4)})
    killed = collections.Counter(s.seq for s in (parse_stamp(r["body"]) for r in records) if s and s.writer == "k0")
    assert killed and max(killed.values()) == 1, "a record of the killed writer arrived twice"
    assert sorted(killed) == list(range(len(killed))), "a hole in the killed writer's records"
    host = socket.gethostname()
    for r in records:
        writer = r["body"].split()[2]
        assert r["resource"]["service.name"] == "hubtest" and r["resource"]["host.name"] == host
        assert r["resource"]["deployment.environment"] == "test"
        assert r["attrs"]["process.pid"] == pids[writer], r
        assert r["attrs"]["logger.name"] == r["scope"] == f"flocklog.stamps.{writer}"
        assert isinstance(r["attrs"]["thread.id"], int) and r["attrs"]["thread.name"] == "MainThread"
        assert (r["severity_text"], r["severity_number"]) == ("INFO", 9)
    assert not [n for n in os.listdir(sink_spool) if n.endswith(".jsonl")], "spool not emptied after the outage"


def test_extras_exceptions_and_levels_become_attributes(tmp_path: Path, run_id: str) -> None:
    receiver = Receiver("http")
    receiver.start()
    try:
        handler = OTLPHandler(endpoint=receiver.endpoint, service_name="unit", spool_dir=str(tmp_path / "spool"))
        record = logging.makeLogRecord(
            {"name": "app.db", "levelno": logging.ERROR, "levelname": "ERROR", "user": "ann", "ids": [1, 2], "obj": {1}}
        )
        record.msg = format_stamp(run_id, "w0", 0, record.created)
        record.client_exc_text = "Traceback (most recent call last):\nValueError: boom"
        handler.handle(record)
        wait_for(lambda: receiver.count(run_id) == 1, 60, "one record")
        handler.close()
    finally:
        receiver.stop()
    (got,) = receiver.snapshot()
    assert got["attrs"]["user"] == "ann" and got["attrs"]["ids"] == [1, 2] and got["attrs"]["obj"] == "{1}"
    assert got["attrs"]["exception.stacktrace"].endswith("ValueError: boom")
    assert (got["severity_text"], got["severity_number"], got["scope"]) == ("ERROR", 17, "app.db")
    assert got["time_unix_nano"] == int(record.created * 1e9)


def test_bad_protocol_is_a_config_error() -> None:
    from flocklog.errors import ConfigError

    with pytest.raises(ConfigError):
        OTLPHandler(protocol="thrift")
