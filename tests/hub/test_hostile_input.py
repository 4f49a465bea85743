"""A live hub against hostile bytes: it stays up, counts every bad frame, never unpickles, and good clients go on."""

from __future__ import annotations

import logging
import pickle
import random
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from hubwriters import check, make_handler

from flocklog.errors import HubError
from flocklog.hub import frames, query_status, start_hub
from flocklog.hub._address import parse_address
from flocklog.hub.client import HubHandler
from flocklog.stamps import stamped_logger, write_stamped


class CreatesAFile:
    """A pickle whose loading would create ``path``: proof of code execution if the file ever appears."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def raw_connect(address: str) -> tuple[socket.socket, bytes]:
    addr = parse_address(address)
    if addr.kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(addr.path)
    else:
        sock = socket.create_connection((addr.host, addr.port))
    sock.settimeout(10)
    hello = frames.unpack(frames.read_payload(sock, frames.DEFAULT_MAX_FRAME))
    return sock, hello["nonce"]


def send_and_wait_for_close(address: str, data: bytes) -> None:
    """Send one hostile frame and wait until the hub has dealt with it (it closes the connection)."""
    sock, _ = raw_connect(address)
    try:
        sock.sendall(data)
        while sock.recv(65536):
            pass
    except OSError:
        pass  # reset by the hub: also a close
    finally:
        sock.close()


def hostile_frames(rng: random.Random, n: int, marker: Path) -> list[bytes]:
    pickled = pickle.dumps(CreatesAFile(marker))
    good_record, _ = frames.encode_record(frames.record_to_fields(logging.makeLogRecord({"msg": "x"}), "x"), 4096)
    makers = [
        lambda: frames.HEADER.pack(frames.DEFAULT_MAX_FRAME + 1 + rng.randrange(1 << 20)),  # oversized
        lambda: frames.HEADER.pack(0),  # empty
        lambda: (lambda b: frames.HEADER.pack(len(b)) + b)(rng.randbytes(rng.randrange(1, 200))),  # noise
        lambda: frames.HEADER.pack(len(pickled)) + pickled,  # a pickle as the frame body
        lambda: (lambda b: frames.HEADER.pack(len(b)) + b)(
            frames.pack({"t": "b", "cid": "x", "seq": 0, "recs": [pickled], "st": [0, 0]})
        ),  # a pickle as a record
        lambda: (lambda b: frames.HEADER.pack(len(b)) + b)(
            frames.pack({"t": "b", "cid": "x", "seq": rng.choice([-1, "1", None, 2.5]), "recs": [good_record]})
        ),  # wrong types in the envelope
        lambda: (lambda b: frames.HEADER.pack(len(b)) + b)(
            frames.pack({"t": "b", "cid": "x", "seq": 1, "recs": [frames.pack({"name": 1, "msg": b"x"})]})
        ),  # wrong types in a record
        lambda: (lambda b: frames.HEADER.pack(len(b)) + b)(
            frames.pack(rng.choice([[1, 2], "t", {"t": 5}, {"t": "zz"}]))
        ),
    ]
    return [rng.choice(makers)() for _ in range(n)]


def test_ten_thousand_hostile_frames_are_counted_while_a_good_client_loses_nothing(tmp_path: Path, run_id: str) -> None:
    log_path, marker = tmp_path / "hub.log", tmp_path / "pwned"
    file_handler = logging.FileHandler(log_path)
    hub = start_hub([file_handler])
    good = make_handler(hub.address, str(tmp_path / "spool"))
    attack = hostile_frames(random.Random(1234), 10_000, marker)
    try:
        writer = threading.Thread(
            target=write_stamped,
            args=(stamped_logger("hubtest.good", good),),
            kwargs={"run": run_id, "writer": "good", "count": 5000, "pause": 0.0002},
        )
        writer.start()
        for data in attack:
            send_and_wait_for_close(hub.address, data)
        writer.join(120)
        assert good.drain(30)
        status = hub.status()
    finally:
        good.close()
        hub.stop()
        file_handler.close()
    assert status["running"]
    assert status["malformed"] + status["oversized"] == len(attack), status
    assert status["oversized"] > 0 and status["malformed"] > 0
    assert not marker.exists(), "the hub unpickled a frame: remote code execution"
    assert good.stats()["spooled"] == 0
    check(log_path, run=run_id, writers=1, per_writer=5000)


def test_tcp_hub_with_a_secret_rejects_unauthenticated_and_forged_frames(tmp_path: Path, run_id: str) -> None:
    log_path = tmp_path / "hub.log"
    file_handler = logging.FileHandler(log_path)
    hub = start_hub([file_handler], address="tcp://127.0.0.1:0", secret="right secret")
    try:
        record, _ = frames.encode_record(
            frames.record_to_fields(logging.makeLogRecord({"msg": "FORGED"}), "FORGED"), 4096
        )
        body = frames.pack({"t": "b", "cid": "evil", "seq": 0, "recs": [record], "st": [0, 0]})
        send_and_wait_for_close(hub.address, frames.HEADER.pack(len(body)) + body)  # no tag at all
        sock, nonce = raw_connect(hub.address)  # a tag made with the wrong secret
        with sock:
            sock.sendall(frames.seal(body, secret=b"guess", nonce=nonce, direction=frames.TO_HUB, counter=1))
            assert sock.recv(65536)  # an error reply, then the close
        # a correctly tagged frame replayed on another connection (other nonce) is rejected too
        sock, nonce = raw_connect(hub.address)
        sealed = frames.seal(body, secret=b"right secret", nonce=nonce, direction=frames.TO_HUB, counter=1)
        sock.close()
        send_and_wait_for_close(hub.address, sealed)
        with pytest.raises(HubError, match="requires a shared secret"):
            query_status(hub.address)
        assert query_status(hub.address, secret="right secret")["auth_failed"] == 3
        with pytest.raises(HubError, match="authentication"):
            query_status(hub.address, secret="wrong")
        handler = HubHandler(hub.address, secret="right secret", spool_dir=tmp_path / "spool", when_full="block")
        handler.setFormatter(logging.Formatter("%(message)s"))
        write_stamped(stamped_logger("hubtest.tcp", handler), run=run_id, writer="tcp", count=1000)
        assert handler.drain(30)
        handler.close()
    finally:
        hub.stop()
        file_handler.close()
    assert "FORGED" not in log_path.read_text()
    check(log_path, run=run_id, writers=1, per_writer=1000)


def test_a_client_without_the_secret_spools_instead_of_losing_records(
    tmp_path: Path, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOCKLOG_HUB_SECRET", raising=False)
    with start_hub([logging.NullHandler()], address="tcp://127.0.0.1:0", secret="s") as hub:
        handler = HubHandler(hub.address, spool_dir=tmp_path / "spool", drain_timeout=0.5, handle_sigterm=False)
        write_stamped(stamped_logger("hubtest.nosecret", handler), run=run_id, writer="n", count=100)
        handler.close()
        assert handler.stats()["spooled"] == 100
        assert hub.status()["records_written"] == 0
    assert list((tmp_path / "spool").glob("*.spool"))


def test_hand_made_records_with_odd_field_types_are_delivered_instead_of_poisoning_the_stream(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "hub.log"
    file_handler = logging.FileHandler(log_path)
    with start_hub([file_handler]) as hub:
        handler = HubHandler(hub.address, spool_dir=tmp_path / "spool")
        odd = [
            logging.makeLogRecord({"msg": "levelno is None"}),
            logging.makeLogRecord({"msg": "strings everywhere", "levelno": "7", "lineno": "x", "name": 5}),
            logging.makeLogRecord({"msg": "huge ints", "process": 2**70, "big": 2**80, "obj": object()}),
            logging.makeLogRecord({"msg": "lone surrogate \udcff", "__class__": 1, "_private": 2}),
        ]
        for record in odd:
            handler.handle(record)
        handler.handle(logging.makeLogRecord({"msg": "after the odd ones", "levelno": logging.INFO}))
        assert handler.drain(10)
        stats = handler.stats()
        handler.close()
    file_handler.close()
    text = log_path.read_text()
    for expected in ("levelno is None", "strings everywhere", "huge ints", "lone surrogate \\udcff", "after the odd"):
        assert expected in text
    assert stats["sent"] == 5 and stats["dropped_rejected"] == stats["spooled"] == 0
