"""``flocklog verify`` finds every kind of defect it claims to, and passes a clean set."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flocklog.testing import format_stamp, parse_stamp, stamped_logger, write_stamped
from flocklog.verify import VerifyOptions, verify_paths


def _write_set(path: Path, run: str, writers: int = 3, count: int = 50) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s [PID:%(process)d] %(message)s"))
    logger = stamped_logger(f"verify-test-{run}", handler)
    for writer in range(writers):
        write_stamped(logger, run=run, writer=f"w{writer}", count=count, payload_size=10)
    handler.close()


def test_clean_set_passes_with_exact_counts(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id)
    report = verify_paths([str(log)], VerifyOptions(expect_per_writer=50, writers=3))
    assert report.ok, report.to_dict()
    assert (report.records, report.lost, report.duplicated, report.torn) == (150, 0, 0, 0)


def test_stamp_roundtrip_and_crc_rejects_a_changed_byte() -> None:
    text = format_stamp("run1", "w1", 7, 1700000000.123456, "abc")
    stamp = parse_stamp("2026-01-01 INFO " + text)
    assert stamp is not None and (stamp.writer, stamp.seq, stamp.created) == ("w1", 7, 1700000000.123456)
    assert parse_stamp(text.replace(" 7 ", " 8 ")) is None


def test_a_missing_line_counts_as_lost_and_fails(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id)
    lines = log.read_text().splitlines(keepends=True)
    del lines[20]
    log.write_text("".join(lines))
    report = verify_paths([str(log)], VerifyOptions(expect_per_writer=50, writers=3))
    assert report.lost == 1 and not report.ok


def test_a_missing_tail_is_lost_only_when_the_expected_count_is_known(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id, writers=1)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-2]))
    assert verify_paths([str(log)]).lost == 0
    assert verify_paths([str(log)], VerifyOptions(expect_per_writer=50)).lost == 2


def test_a_repeated_line_counts_as_duplicated(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join([*lines, lines[3]]))
    report = verify_paths([str(log)])
    assert report.duplicated == 1 and not report.ok


def test_interleaved_and_truncated_lines_count_as_torn(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id)
    lines = log.read_text().splitlines(keepends=True)
    # Two writers' bytes mixed into one line, as unsynchronised buffered writes produce, and a final partial write.
    lines[5] = lines[5][: lines[5].index("flk1") + 12] + lines[6]
    log.write_text("".join(lines) + lines[7][:30])
    report = verify_paths([str(log)])
    assert report.torn == 2 and not report.ok


def test_missing_oldest_prefix_is_expired_not_lost_unless_forbidden(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id, writers=1)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[10:]))
    report = verify_paths([str(log)], VerifyOptions(expect_per_writer=50))
    assert (report.expired, report.lost, report.ok) == (10, 0, True)
    strict = verify_paths([str(log)], VerifyOptions(expect_per_writer=50, allow_expired=False))
    assert strict.lost == 10 and not strict.ok


def test_gzip_archives_and_rotated_files_are_part_of_the_set(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id, writers=1, count=30)
    lines = log.read_text().splitlines(keepends=True)
    with gzip.open(tmp_path / "app.log.2.gz", "wt") as archive:
        archive.write("".join(lines[:10]))
    (tmp_path / "app.log.1").write_text("".join(lines[10:20]))
    log.write_text("".join(lines[20:]))
    (tmp_path / "app.log.lock").write_text("not a log")
    report = verify_paths([str(log)], VerifyOptions(expect_per_writer=30, writers=1))
    assert report.ok and report.records == 30 and report.archives == 2


def test_a_truncated_gzip_archive_is_reported_unreadable(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id, writers=1, count=200)
    payload = gzip.compress(log.read_bytes())
    (tmp_path / "app.log.1.gz").write_bytes(payload[: len(payload) // 2])
    report = verify_paths([str(log)])
    assert report.unreadable == 1 and not report.ok


def _stamped_line(run: str, writer: str, seq: int, created: float) -> str:
    return f"INFO {format_stamp(run, writer, seq, created)}\n"


def test_timed_archive_with_a_record_outside_its_interval_is_a_violation(tmp_path: Path, run_id: str) -> None:
    base = int(time.time()) - 100
    suffix = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(base))
    (tmp_path / f"app.log.{suffix}").write_text(
        _stamped_line(run_id, "w", 0, base + 0.1) + _stamped_line(run_id, "w", 1, base + 1.5)
    )
    (tmp_path / "app.log").write_text(_stamped_line(run_id, "w", 2, base + 2.2))
    report = verify_paths([str(tmp_path / "app.log")], VerifyOptions(when="S"))
    assert report.interval_violations == 1 and not report.ok
    ok_set = verify_paths([str(tmp_path / "app.log")], VerifyOptions(when="S", interval=2))
    assert ok_set.interval_violations == 0 and ok_set.ok


def test_two_archives_for_one_boundary_are_a_split(tmp_path: Path, run_id: str) -> None:
    base = int(time.time()) - 100
    suffix = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(base))
    (tmp_path / f"app.log.{suffix}").write_text(_stamped_line(run_id, "w", 0, base + 0.1))
    (tmp_path / f"app.log.{suffix}.1").write_text(_stamped_line(run_id, "w", 1, base + 0.2))
    (tmp_path / "app.log").write_text(_stamped_line(run_id, "w", 2, base + 5))
    report = verify_paths([str(tmp_path / "app.log")], VerifyOptions(when="S"))
    assert report.split_intervals == 1 and not report.ok


def test_live_file_older_than_newest_archive_is_a_violation(tmp_path: Path, run_id: str) -> None:
    base = int(time.time()) - 100
    suffix = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(base + 3))
    (tmp_path / f"app.log.{suffix}").write_text(_stamped_line(run_id, "w", 1, base + 3.5))
    (tmp_path / "app.log").write_text(_stamped_line(run_id, "w", 0, base + 1))
    report = verify_paths([str(tmp_path / "app.log")], VerifyOptions(when="S"))
    assert report.interval_violations == 1


def test_an_empty_set_is_not_ok(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("")
    assert not verify_paths([str(tmp_path / "app.log")]).ok
    assert not verify_paths([str(tmp_path / "nothing.log")]).ok


def test_cli_exit_code_and_json(tmp_path: Path, run_id: str, subprocess_env: dict[str, str]) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id)
    cmd = [sys.executable, "-m", "flocklog.cli", "verify", str(log), "--expect", "50", "--writers", "3", "--json"]
    good = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env, check=False)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["records"] == 150
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]))
    bad = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env, check=False)
    assert bad.returncode == 1 and json.loads(bad.stdout)["lost"] == 1


def test_bad_when_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown --when"):
        VerifyOptions(when="fortnight")


def test_per_writer_expected_counts_find_tail_loss_and_silent_writers(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id, writers=2, count=10)
    expected = {"w0": 10, "w1": 12, "w9": 3}
    report = verify_paths([str(log)], VerifyOptions(expected_counts=expected))
    assert (report.lost, report.missing_writers) == (2 + 3, 1)


def test_a_stamp_never_rounds_a_record_into_the_next_second() -> None:
    created = 1795604796.9999996  # the handler files this in the 796 s slot; a rounded stamp would say 797.000000
    parsed = parse_stamp(format_stamp("run1", "w0", 7, created, "x"))
    assert parsed is not None and parsed.created < 1795604797.0
    assert f"{parsed.created:.6f}" == "1795604796.999999"
    assert parse_stamp(format_stamp("run1", "w0", 8, 1795604797.0, "x")).created == 1795604797.0  # type: ignore[union-attr]
