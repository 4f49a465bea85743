"""``flocklog verify`` finds every kind of defect it claims to, and passes a clean set."""

from __future__ import annotations

import gzip
import io
import json
import logging
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from flocklog._benchmark_harness import Workload, run_workload
from flocklog.stamps import format_stamp, parse_stamp, stamped_logger, write_stamped
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


def test_a_missing_tail_is_found_from_the_writers_ledger(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    handler = logging.FileHandler(log)
    logger = stamped_logger(f"ledger-{run_id}", handler)
    for writer, count in (("short", 20), ("long", 80)):
        write_stamped(logger, run=run_id, writer=writer, count=count, ledger=tmp_path / "ledger")
    handler.close()
    assert verify_paths([str(log)], VerifyOptions(ledger=str(tmp_path / "ledger"))).ok
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-5]))  # the last 5 records of "long" are gone; nothing else tells it
    assert verify_paths([str(log)]).lost == 0  # without expectations a missing tail is invisible...
    report = verify_paths([str(log)], VerifyOptions(ledger=str(tmp_path / "ledger")))
    assert report.lost == 5 and not report.ok  # ...with the ledger it is found
    by_writer = {w.writer: w.lost for w in report.writers}
    assert by_writer == {"short": 0, "long": 5}


def test_a_writer_in_the_ledger_with_no_record_in_the_set_is_lost(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id, writers=1, count=10)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    (ledger / f"{run_id}.w0").write_text(f"{10:>20d} {time.time():.6f}\n")
    (ledger / f"{run_id}.gone").write_text(f"{7:>20d} {time.time():.6f}\n")
    report = verify_paths([str(log)], VerifyOptions(ledger=str(ledger)))
    assert (report.lost, report.missing_writers, report.ok) == (7, 1, False)


def test_a_killed_writer_may_be_one_record_ahead_of_its_ledger_not_two(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id, writers=1, count=10)
    ledger = tmp_path / "ledger"
    ledger.mkdir()
    (ledger / f"{run_id}.w0").write_text(f"{9:>20d} {time.time() - 5:.6f}\n")  # killed before the last update
    assert verify_paths([str(log)], VerifyOptions(ledger=str(ledger))).ok
    (ledger / f"{run_id}.w0").write_text(f"{8:>20d} {time.time() - 5:.6f}\n")
    assert not verify_paths([str(log)], VerifyOptions(ledger=str(ledger))).ok


def test_interleaved_and_truncated_lines_count_as_torn(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id)
    lines = log.read_text().splitlines(keepends=True)
    # Two writers' bytes mixed into one line, as unsynchronised buffered writes produce, and a final partial write.
    lines[5] = lines[5][: lines[5].index("flk1") + 12] + lines[6]
    log.write_text("".join(lines) + lines[7][:30])
    report = verify_paths([str(log)])
    assert report.torn == 2 and not report.ok


def test_missing_oldest_prefix_is_lost_unless_retention_explains_it(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id, writers=1)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[10:]))
    # No retention given, and a set of one file: nothing can have expired, the 10 records are lost.
    report = verify_paths([str(log)], VerifyOptions(expect_per_writer=50))
    assert (report.expired, report.lost, report.ok) == (0, 10, False)
    # backupCount=3 never reached (no archive at all): still lost.
    assert verify_paths([str(log)], VerifyOptions(expect_per_writer=50, backup_count=3)).lost == 10
    # The caller vouches for retention: expired.
    trusted = verify_paths([str(log)], VerifyOptions(expect_per_writer=50, allow_expired=True))
    assert (trusted.expired, trusted.lost, trusted.ok) == (10, 0, True)
    strict = verify_paths([str(log)], VerifyOptions(expect_per_writer=50, allow_expired=False))
    assert strict.lost == 10 and not strict.ok


def test_missing_oldest_prefix_is_expired_when_backup_count_was_reached(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id, writers=1, count=40)
    lines = log.read_text().splitlines(keepends=True)
    (tmp_path / "app.log.2").write_text("".join(lines[10:20]))
    (tmp_path / "app.log.1").write_text("".join(lines[20:30]))
    log.write_text("".join(lines[30:]))
    report = verify_paths([str(log)], VerifyOptions(expect_per_writer=40, backup_count=2))
    assert (report.expired, report.lost, report.ok) == (10, 0, True), report.to_dict()
    assert verify_paths([str(log)], VerifyOptions(expect_per_writer=40, backup_count=3)).lost == 10


def test_max_age_explains_a_prefix_only_when_the_set_is_that_old(tmp_path: Path, run_id: str) -> None:
    log = tmp_path / "app.log"
    _write_set(log, run_id, writers=1)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[10:]))
    young = verify_paths([str(log)], VerifyOptions(max_age=3600))
    assert young.lost == 10 and not young.ok  # records a second old cannot have aged out of a one-hour retention
    later = verify_paths([str(log)], VerifyOptions(max_age=3600, now=time.time() + 7200))
    assert (later.expired, later.lost, later.ok) == (10, 0, True)


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


# --- Sets broken the way the stdlib breaks them: real processes sharing one stdlib handler, each writer keeping a
# ledger. verify must fail every one of them and pass flocklog's sets made the same way.


def _real_set(tmp_path: Path, kind: str, **settings: Any) -> tuple[Path, VerifyOptions]:
    settings.setdefault("duration", 2.0)
    work = Workload(kind=kind, directory=tmp_path / kind, processes=4, ledger=tmp_path / kind / "ledger", **settings)
    run = uuid.uuid4().hex[:10]
    result = run_workload(work, run)
    assert not result.errors and result.records > 0, result.errors
    timed = "timed" in kind
    options = VerifyOptions(
        run=run,
        ledger=str(work.ledger),
        backup_count=work.backup_count,
        max_bytes=None if timed else work.max_bytes,
        when=work.when if timed else None,
    )
    return work.log_path, options


@pytest.mark.slow
def test_stdlib_size_rotation_with_a_full_backup_count_fails_and_flocklog_passes(tmp_path: Path) -> None:
    # backupCount reached, so the old checker called every missing oldest part "expired" (with writers started one
    # after another it said ok, exit 0, on a stdlib set with 46,433 of 96,358 records "expired"). Writers write the
    # same count, so all four are still writing while the surviving archives (the newest 100) fill: the stdlib's
    # damage is inside what survives, where a checker can see it; damage only in what retention removed afterwards
    # is invisible to any checker.
    settings: dict[str, Any] = {"max_bytes": 16384, "backup_count": 100, "count": 5000, "duration": None}
    stdlib_log, stdlib_options = _real_set(tmp_path, "stdlib-size", **settings)
    stdlib = verify_paths([str(stdlib_log)], stdlib_options)
    assert not stdlib.ok and stdlib.lost > 0, stdlib.to_dict()
    flocklog_log, flocklog_options = _real_set(tmp_path, "flocklog-size", **settings)
    flocklog = verify_paths([str(flocklog_log)], flocklog_options)
    assert flocklog.ok and flocklog.expired > 0, flocklog.to_dict()  # retention worked, and is told from loss


@pytest.mark.slow
def test_stdlib_size_rotation_below_its_backup_count_fails_and_flocklog_passes(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"max_bytes": 4096, "backup_count": 5000}
    stdlib_log, stdlib_options = _real_set(tmp_path, "stdlib-size", **settings)
    stdlib = verify_paths([str(stdlib_log)], stdlib_options)
    assert not stdlib.ok and stdlib.expired == 0, stdlib.to_dict()  # backupCount never reached: nothing expired
    # Told nothing about retention, verify calls no missing record "expired" (the old checker said 182 of them were).
    bare = verify_paths([str(stdlib_log)], VerifyOptions(run=stdlib_options.run))
    assert not bare.ok and bare.expired == 0, bare.to_dict()
    flocklog_log, flocklog_options = _real_set(tmp_path, "flocklog-size", **settings)
    flocklog = verify_paths([str(flocklog_log)], flocklog_options)
    assert flocklog.ok and flocklog.expired == 0, flocklog.to_dict()


@pytest.mark.slow
def test_stdlib_timed_rotation_every_second_fails_and_flocklog_passes(tmp_path: Path) -> None:
    settings: dict[str, Any] = {"when": "S", "backup_count": 5000}
    stdlib_log, stdlib_options = _real_set(tmp_path, "stdlib-timed", **settings)
    stdlib = verify_paths([str(stdlib_log)], stdlib_options)
    assert not stdlib.ok and stdlib.lost > 0 and stdlib.expired == 0, stdlib.to_dict()
    bare = verify_paths([str(stdlib_log)], VerifyOptions(run=stdlib_options.run, when="S"))
    assert not bare.ok and bare.lost > 0 and bare.expired == 0, bare.to_dict()  # old: lost 0, expired 90,159
    flocklog_log, flocklog_options = _real_set(tmp_path, "flocklog-timed", **settings)
    flocklog = verify_paths([str(flocklog_log)], flocklog_options)
    assert flocklog.ok, flocklog.to_dict()


def test_stamps_refuse_a_run_id_verify_cannot_read(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    log = tmp_path / "app.log"
    kwargs = json.dumps({"filename": str(log)})
    cmd = [sys.executable, "-m", "flocklog.stamps", "--handler", "logging.FileHandler", "--kwargs", kwargs]
    refused = subprocess.run(
        [*cmd, "--run", "v1.2", "--writer", "w", "--count", "100"],
        capture_output=True,
        text=True,
        env=subprocess_env,
        check=False,
    )
    assert refused.returncode == 2 and "run id 'v1.2' cannot be verified" in refused.stderr
    assert not log.exists() or log.read_text() == ""  # nothing written that verify would call torn
    with pytest.raises(ValueError, match="cannot be verified"):
        write_stamped(logging.getLogger("refused"), run="v1.2", writer="w", count=1)
    with pytest.raises(ValueError, match="writer id"):
        format_stamp("run1", "a writer", 0, time.time())


def test_json_lines_whose_message_holds_the_stamp_are_verified(tmp_path: Path, run_id: str) -> None:
    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return json.dumps({"time": record.created, "level": record.levelname, "message": record.getMessage()})

    log = tmp_path / "app.jsonl"
    handler = logging.FileHandler(log)
    handler.setFormatter(JsonFormatter())
    write_stamped(stamped_logger(f"json-{run_id}", handler), run=run_id, writer="w", count=40)
    handler.close()
    report = verify_paths([str(log)], VerifyOptions(expect_per_writer=40, writers=1))
    assert report.ok and report.records == 40 and report.torn == 0, report.to_dict()
    lines = log.read_text().splitlines(keepends=True)
    lines[3] = lines[3][:-20] + "\n"  # a JSON record cut short after its mark
    del lines[10]
    log.write_text("".join(lines))
    broken = verify_paths([str(log)], VerifyOptions(expect_per_writer=40, writers=1))
    assert (broken.torn, broken.lost) == (1, 2) and not broken.ok


def _size_set(directory: Path, run: str, sizes: list[int], line: int = 100) -> Path:
    """A size set whose archive ``.N`` holds ``sizes[N-1]`` bytes of stamped lines, the oldest numbered highest."""
    seq = 0
    created = time.time() - 1000.0
    for number in range(len(sizes), -1, -1):
        size = sizes[number - 1] if number else line * 3
        body = ""
        while len(body) + line <= size:
            body += format_stamp(run, "w", seq, created, "x" * 10).rjust(line - 1) + "\n"
            seq += 1
            created += 0.5
        name = "app.log" if number == 0 else f"app.log.{number}"
        (directory / name).write_text(body)
    return directory / "app.log"


def test_size_rotation_sanity_finds_small_archives_holes_and_too_many_rotations(tmp_path: Path, run_id: str) -> None:
    full = [4000] * 6
    assert verify_paths([str(_size_set(tmp_path, run_id, full))], VerifyOptions(max_bytes=4000)).ok
    small = tmp_path / "small"
    small.mkdir()
    log = _size_set(small, run_id, [4000, 4000, 300, 4000, 4000])  # app.log.3 rotated with 3 records in it
    report = verify_paths([str(log)], VerifyOptions(max_bytes=4000))
    assert report.undersized_archives == 1 and not report.ok, report.to_dict()
    inferred = verify_paths([str(log)])  # without --max-bytes, the median archive stands for it
    assert inferred.undersized_archives == 1 and inferred.max_bytes_inferred and not inferred.ok
    assert verify_paths([str(log)], VerifyOptions(max_bytes=0)).ok  # not a size set: no size checks
    holes = tmp_path / "holes"
    holes.mkdir()
    log = _size_set(holes, run_id, full)
    (holes / "app.log.3").unlink()
    assert verify_paths([str(log)], VerifyOptions(max_bytes=4000, allow_expired=True)).missing_archives == 1


def test_archives_rotated_in_one_second_beyond_what_its_bytes_explain(tmp_path: Path, run_id: str) -> None:
    now = time.time() - 100
    second = float(int(now))
    for number in range(1, 5):  # four archives of one record each, all ending in the same second
        (tmp_path / f"app.log.{number}").write_text(_stamped_line(run_id, "w", 4 - number, second + 0.1 * number))
    (tmp_path / "app.log").write_text(_stamped_line(run_id, "w", 4, second + 0.9))
    report = verify_paths([str(tmp_path / "app.log")], VerifyOptions(max_bytes=4096))
    assert report.same_second_rotations == 3 and report.excess_archives > 0 and not report.ok, report.to_dict()


def test_cli_reads_expectations_from_a_file_and_a_ledger(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str]
) -> None:
    log = tmp_path / "app.log"
    handler = logging.FileHandler(log)
    write_stamped(stamped_logger(f"cli-{run_id}", handler), run=run_id, writer="w", count=30, ledger=tmp_path / "l")
    handler.close()
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:-3]))
    expect = tmp_path / "expect.json"
    expect.write_text(json.dumps({"w": 30}))
    base = [sys.executable, "-m", "flocklog", "verify", str(log), "--json"]
    for extra in (["--expect-file", str(expect)], ["--ledger", str(tmp_path / "l")]):
        result = subprocess.run([*base, *extra], capture_output=True, text=True, env=subprocess_env, check=False)
        assert result.returncode == 1 and json.loads(result.stdout)["lost"] == 3, result.stdout + result.stderr
    expect.write_text('["w", 30]')
    bad = subprocess.run(
        [*base, "--expect-file", str(expect)], capture_output=True, text=True, env=subprocess_env, check=False
    )
    assert bad.returncode == 1 and bad.stderr.strip().startswith("Error: --expect-file")


def test_flocklog_testing_is_a_deprecated_alias_of_flocklog_stamps(subprocess_env: dict[str, str]) -> None:
    code = "import flocklog.testing as t, flocklog.stamps as s; assert t.parse_stamp is s.parse_stamp"
    warned = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        env=subprocess_env,
        check=False,
    )
    assert warned.returncode == 1 and "DeprecationWarning: flocklog.testing is deprecated" in warned.stderr
    quiet = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", code], env=subprocess_env, check=False
    )
    assert quiet.returncode == 0


def test_the_report_for_a_person_fits_80_columns_and_says_why(tmp_path: Path, run_id: str) -> None:
    from rich.console import Console

    from flocklog.verify import render_report

    log = tmp_path / "app.log"
    _write_set(log, run_id, writers=2)
    log.write_text("".join(log.read_text().splitlines(keepends=True)[5:]))
    out = io.StringIO()
    render_report(verify_paths([str(log)]), Console(file=out, width=80, color_system=None))
    text = out.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines()) and "…" not in text, text
    assert "DEFECTS: lost 5" in text and "writer w0: oldest 5 missing, counted as lost" in text
