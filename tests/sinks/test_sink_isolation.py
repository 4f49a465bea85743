"""A sink whose receiver hangs holds up neither the hub, nor its files, nor the other sinks; it catches up later."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import pytest
from sinkhelpers import LineReader, check_exactly_once, wait_for

from flocklog.hub import HubHandler, start_hub
from flocklog.hub.sinks import StdoutHandler, sink_stats
from flocklog.stamps import stamped_logger, write_stamped

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed (pip install 'flocklog[otel]')")
from otlpreceiver import Receiver

from flocklog.hub.sinks import OTLPHandler

pytestmark = pytest.mark.slow


def test_a_hung_collector_stops_neither_the_file_nor_stdout_and_gets_everything_once_back(
    tmp_path: Path, run_id: str
) -> None:
    hung = socket.socket()  # accepts connections into its backlog and never answers: a hung collector
    hung.bind(("127.0.0.1", 0))
    hung.listen(64)
    port = hung.getsockname()[1]
    otlp = OTLPHandler(
        endpoint=f"http://127.0.0.1:{port}/v1/logs",
        timeout=1.0,
        retry_interval=0.2,
        max_retry_interval=0.5,
        spool_dir=str(tmp_path / "otlp"),
    )
    otlp.set_name("otlp")
    read_fd, write_fd = os.pipe()
    stream = os.fdopen(write_fd, "w", encoding="utf-8")
    out = StdoutHandler(stream=stream, spool_dir=str(tmp_path / "stdout"))
    out.set_name("stdout")
    reader = LineReader(os.fdopen(read_fd, encoding="utf-8"))
    log_file = tmp_path / "hub.log"
    file_handler = logging.FileHandler(log_file)
    hub = start_hub([otlp, out, file_handler])
    client = HubHandler(hub.address, spool_dir=str(tmp_path / "client"), when_full="block")
    client.setFormatter(logging.Formatter("%(message)s"))
    total = 3000
    try:
        write_stamped(stamped_logger("isolation.w0", client), run=run_id, writer="w0", count=total, payload_size=8)
        client.close()
        wait_for(lambda: reader.count(run_id) >= total, 120, "every record on stdout while the collector hangs")
        wait_for(lambda: log_file.read_text().count(run_id) >= total, 120, "every record in the file")
        wait_for(
            lambda: otlp.stats()["failures"] >= 1 and otlp.stats()["spooled"] > 0,
            60,
            "the hung collector's first time-out, its batch spooled",
        )
        stats = sink_stats(hub.handlers)
        assert stats["otlp"]["sent"] == 0 and stats["otlp"]["spooled"] > 0, stats
        assert set(stats) == {"otlp", "stdout"}  # the FileHandler has no stats()
        hung.close()
        receiver = Receiver("http", port=port)  # the collector is back on the same port
        receiver.start()
        try:
            wait_for(lambda: receiver.count(run_id) >= total, 120, "the spooled records at the collector")
            hub.stop()
        finally:
            receiver.stop()
    finally:
        hub.stop()
        for handler in (otlp, out, file_handler):
            handler.close()
        stream.close()
    check_exactly_once((r["body"] for r in receiver.snapshot()), run=run_id, writers={"w0": total})
    check_exactly_once((json.loads(line)["message"] for line in reader.snapshot()), run=run_id, writers={"w0": total})
    final = otlp.stats()
    assert (final["sent"], final["dropped"], final["spooled"]) == (total, 0, 0), final
