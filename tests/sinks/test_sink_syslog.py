"""The syslog sink against a real rsyslog: a private instance on its own loopback ports, socket and work directory.

``.ci/run`` installs rsyslog; outside CI a machine without ``rsyslogd`` skips with the reason, under CI it fails.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sinkhelpers import check_exactly_once, finish, start_serve, start_writers, wait_for, write_config

from flocklog.hub.sinks import SyslogHandler
from flocklog.hub.sinks.syslog import parse_address, severity
from service_rules import need

RSYSLOGD = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
# What the private rsyslog writes per message: enough to check PROCID, MSGID and structured data.
LINE_RE = re.compile(r"^(?P<procid>\S+) (?P<msgid>\S+) (?P<sd>\[.*?\]) (?P<msg>.*)$")


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Rsyslog:
    proc: subprocess.Popen[bytes]
    tcp: int
    udp: int
    unix: Path
    out: Path

    def address(self, transport: str) -> str:
        if transport == "unix":
            return f"unix:{self.unix}"
        return f"{transport}://127.0.0.1:{self.tcp if transport == 'tcp' else self.udp}"

    def lines(self) -> list[str]:
        try:
            text = self.out.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return text.splitlines()


@pytest.fixture
def rsyslog(tmp_path: Path) -> Iterator[Rsyslog]:
    need(RSYSLOGD is not None, "rsyslogd is not installed (apt-get install rsyslog; .ci/run installs it)")
    assert RSYSLOGD is not None
    base = tmp_path / "rsyslog"
    (base / "work").mkdir(parents=True)
    tcp, udp = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    sock, out = base / "log.sock", base / "received.log"
    conf = base / "rsyslog.conf"
    conf.write_text(
        f"""
global(workDirectory="{base / "work"}" maxMessageSize="64k")
module(load="imuxsock" SysSock.Use="off")
module(load="imtcp")
module(load="imudp")
input(type="imuxsock" Socket="{sock}" RateLimit.Interval="0" UseSpecialParser="off" ParseHostname="on")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
input(type="imudp" address="127.0.0.1" port="{udp}" rcvbufSize="8m")
template(name="fields" type="string" string="%procid% %msgid% %structured-data% %msg%\\n")
*.* action(type="omfile" file="{out}" template="fields")
"""
    )
    check = subprocess.run([RSYSLOGD, "-N1", "-f", str(conf)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [RSYSLOGD, "-n", "-f", str(conf), "-i", str(base / "rsyslogd.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    server = Rsyslog(proc, tcp, udp, sock, out)
    try:
        wait_for(lambda: sock.exists(), 60, "rsyslog's private socket")
        for transport in ("tcp", "udp", "unix"):  # each input answers before the test starts
            probe = SyslogHandler(address=server.address(transport), spool_dir=str(base / f"probe-{transport}"))
            marker = f"probe-{transport}"

            def arrived(probe: SyslogHandler = probe, marker: str = marker) -> bool:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                if any(marker in line for line in server.lines()):
                    return True
                probe.handle(logging.makeLogRecord({"msg": marker, "levelno": logging.INFO, "levelname": "INFO"}))
                probe.flush()
                return False

            wait_for(arrived, 60, f"rsyslog's {transport} input")
            probe.close()
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        with contextlib.suppress(OSError):
            proc.stderr.close() if proc.stderr else None


# UDP has no flow control: the hub sends a batch at once and the kernel drops what overflows the receiver's
# buffer (about 170 such datagrams fit the default 208 KiB). rsyslog's input is given 8 MiB (rcvbufSize, forced as
# root), far more than the 2 x 200 short messages, so the exact count is fair.
CASES = {"tcp": (4, 1000), "unix": (4, 1000), "udp": (2, 200)}


@pytest.mark.slow
@pytest.mark.parametrize("transport", list(CASES))
def test_rsyslog_receives_every_writer_record_exactly_once(
    transport: str, rsyslog: Rsyslog, tmp_path: Path, subprocess_env: dict[str, str], run_id: str
) -> None:
    n, count = CASES[transport]
    handler = {
        "class": "flocklog.hub.sinks.SyslogHandler",
        "address": rsyslog.address(transport),
        "app_name": "hubtest",
        "spool_dir": str(tmp_path / "sink"),
    }
    sock = tmp_path / "hub.sock"
    hub = start_serve(write_config(tmp_path, {"syslog": handler}), sock, subprocess_env)
    try:
        writers = start_writers(f"unix:{sock}", subprocess_env, tmp_path / "spool", run_id, n=n, count=count)
        pids = {f"w{i}": p.pid for i, p in enumerate(writers)}
        assert finish(writers) == [count] * n
        wait_for(
            lambda: sum(run_id in line for line in rsyslog.lines()) >= n * count,
            120,
            f"{n * count} records in rsyslog's file",
        )
    finally:
        hub.send_signal(signal.SIGTERM)
        _, err = hub.communicate(timeout=60)
    assert hub.returncode == 0, err
    parsed = [m for m in (LINE_RE.match(line) for line in rsyslog.lines() if run_id in line) if m]
    check_exactly_once((m["msg"] for m in parsed), run=run_id, writers=dict.fromkeys(pids, count))
    for m in parsed:
        writer = m["msg"].split()[2]
        assert m["procid"] == str(pids[writer])  # the worker's pid, not the hub's
        assert m["msgid"] == f"flocklog.stamps.{writer}"
        assert f'logger="flocklog.stamps.{writer}"' in m["sd"] and 'level="INFO"' in m["sd"], m["sd"]


def test_rfc5424_message_layout_and_escaping() -> None:
    handler = SyslogHandler(address="udp://127.0.0.1:9", facility="local3", app_name="my app", hostname="h1")
    record = logging.makeLogRecord(
        {"name": 'we"ird]', "msg": "line one\nline two", "levelno": logging.ERROR, "levelname": "ERROR"}
    )
    record.created, record.process, record.thread = 1_700_000_000.25, 4242, 7
    text = handler.prepare(record)
    assert text.startswith('<155>1 2023-11-14T22:13:20.250000Z h1 myapp 4242 we"ird] ')
    assert '[flocklog@32473 logger="we\\"ird\\]" thread="7"' in text
    assert text.endswith("] line one\nline two")
    handler.close()


def test_levels_addresses_and_bad_config() -> None:
    assert [severity(v) for v in (50, 40, 30, 20, 10, 5)] == [2, 3, 4, 6, 7, 7]
    assert parse_address("tcp://[::1]:514") == ("tcp", ("::1", 514))
    assert parse_address("unix:/dev/log") == ("unix", "/dev/log")
    from flocklog.errors import ConfigError

    for bad in ("tcp://host", "syslog.example:514", "unix:"):
        with pytest.raises(ConfigError):
            parse_address(bad)
    with pytest.raises(ConfigError):
        SyslogHandler(address="udp://127.0.0.1:9", facility="nope")
