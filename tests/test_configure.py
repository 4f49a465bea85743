"""``flocklog.configure()``: scripts and cron jobs that share a log set, or reach a hub, with one call."""

from __future__ import annotations

import json
import logging
import logging.config
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import flocklog
from flocklog.errors import ConfigError
from flocklog.hub.status import query_status
from flocklog.stamps import StampFilter, parse_stamp
from flocklog.verify import VerifyOptions, verify_paths

# A cron job as users write it: configure, log through an ordinary logger, exit without closing anything.
JOB = """
import logging, sys
import flocklog
from flocklog.stamps import StampFilter, write_stamped

run, writer, count, pause, target = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
if target == "hub":
    flocklog.configure()  # the address comes from $FLOCKLOG_HUB_ADDRESS
else:
    flocklog.configure(target, when="S", backup_count=1000)
log = logging.getLogger("job")
log.addFilter(StampFilter())
print(write_stamped(log, run=run, writer=writer, count=count, pause=pause))
"""


def _job(tmp_path: Path, env: dict[str, str], run: str, writer: str, count: int, pause: float, target: str) -> str:
    script = tmp_path / "job.py"
    if not script.exists():
        script.write_text(JOB)
    result = subprocess.run(
        [sys.executable, str(script), run, writer, str(count), str(pause), target],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    """The root logger, given back to the next test as this one found it (configure() may have replaced some)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.slow
def test_cron_jobs_started_apart_share_one_timed_set_with_nothing_lost(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str]
) -> None:
    log_file = tmp_path / "logs" / "cron.log"
    log_file.parent.mkdir()
    from concurrent.futures import ThreadPoolExecutor

    def job(index: int) -> str:
        time.sleep(0.4 * index)  # unrelated processes, started at different moments, as cron and hand-runs are
        return _job(tmp_path, subprocess_env, run_id, f"job{index}", 300, 0.008, str(log_file))

    with ThreadPoolExecutor(5) as pool:
        written = list(pool.map(job, range(5)))
    assert written == ["300"] * 5
    report = verify_paths(
        [str(log_file)], VerifyOptions(expect_per_writer=300, writers=5, run=run_id, when="S", tolerance=0.5)
    )
    assert report.ok, report.to_dict()
    assert report.records == 1500
    assert report.archives >= 2, "the jobs must have crossed rotation boundaries to prove anything"


@pytest.mark.slow
def test_a_job_started_beside_a_hub_reaches_it_through_the_environment_and_drains_at_exit(
    tmp_path: Path, run_id: str, subprocess_env: dict[str, str]
) -> None:
    hub_log = tmp_path / "hub.log"
    config = {
        "version": 1,
        "handlers": {"file": {"class": "logging.FileHandler", "filename": str(hub_log)}},
        "root": {"level": "DEBUG", "handlers": ["file"]},
    }
    (tmp_path / "hub.json").write_text(json.dumps(config))
    sock = tmp_path / "hub.sock"
    hub_out = (tmp_path / "hub.out").open("wb")
    hub = subprocess.Popen(
        [sys.executable, "-m", "flocklog.cli", "serve", "--config", str(tmp_path / "hub.json"), "--unix", str(sock)],
        env=subprocess_env,
        stdout=hub_out,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() or not _answers(f"unix:{sock}"):
            assert hub.poll() is None and time.monotonic() < deadline, "flocklog serve did not come up"
            time.sleep(0.05)
        env = dict(subprocess_env, FLOCKLOG_HUB_ADDRESS=f"unix:{sock}", FLOCKLOG_HUB_SPOOL_DIR=str(tmp_path / "sp"))
        assert _job(tmp_path, env, run_id, "cron", 2000, 0.0, "hub") == "2000"
    finally:
        hub.terminate()
        hub.wait(30)
        hub_out.close()
    seqs = sorted(s.seq for s in map(parse_stamp, hub_log.read_text().splitlines()) if s and s.run == run_id)
    assert seqs == list(range(2000)), "every record of a job that just exits reaches the hub, once"


def _answers(address: str) -> bool:
    try:
        query_status(address, timeout=1.0)
    except flocklog.HubError:
        return False
    return True


def test_configuring_again_replaces_the_earlier_handler_and_keeps_other_libraries_ones(
    tmp_path: Path, root_logger: logging.Logger
) -> None:
    theirs = logging.StreamHandler(sys.stderr)
    root_logger.addHandler(theirs)
    first = flocklog.configure(tmp_path / "first.log", when="H")
    second = flocklog.configure(tmp_path / "second.log", when=None, max_bytes=1_000_000, level="DEBUG")
    assert isinstance(second, flocklog.RotatingFileHandler)
    assert not isinstance(second, flocklog.TimedRotatingFileHandler)
    assert first not in root_logger.handlers and second in root_logger.handlers and theirs in root_logger.handlers
    log = logging.getLogger("app.step")
    log.addFilter(StampFilter())
    log.debug("only once, only in the second file")
    second.flush()
    assert (tmp_path / "first.log").read_text() == ""
    lines = (tmp_path / "second.log").read_text().splitlines()
    assert len(lines) == 1 and "only once" in lines[0] and lines[0].startswith("DEBUG ")
    root_logger.removeHandler(theirs)
    theirs.close()


def test_reconfiguring_while_another_thread_logs_loses_and_doubles_nothing(
    tmp_path: Path, root_logger: logging.Logger
) -> None:
    log_file = tmp_path / "busy.log"
    flocklog.configure(log_file, when="H")
    log = logging.getLogger("app.busy")
    done = threading.Event()
    logged = 0

    def keep_logging() -> None:
        nonlocal logged
        while not done.is_set():
            log.info("record %d", logged)
            logged += 1

    thread = threading.Thread(target=keep_logging)
    thread.start()
    try:
        for _ in range(100):
            flocklog.configure(log_file, when="H")
    finally:
        done.set()
        thread.join()
    lines = log_file.read_text().splitlines()
    assert [int(line.rsplit(" ", 1)[1]) for line in lines] == list(range(logged))
    assert logged > 100, "the thread must have logged across the swaps"


def test_a_flocklog_handler_put_on_the_root_by_dict_config_is_replaced_not_doubled(
    tmp_path: Path, root_logger: logging.Logger
) -> None:
    import logging.config

    log_file = tmp_path / "app.log"
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"f": {"class": "flocklog.TimedRotatingFileHandler", "filename": str(log_file), "when": "H"}},
            "root": {"handlers": ["f"], "level": "INFO"},
        }
    )
    flocklog.configure(log_file, when="H")
    logging.getLogger("app").info("once")
    assert len(root_logger.handlers) == 1
    assert [line for line in log_file.read_text().splitlines() if "once" in line] != []
    assert len(log_file.read_text().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("x.log",), {"hub": "unix:/tmp/h.sock"}, "not both"),
        ((), {}, "nothing to log to"),
        (("missing/x.log",), {}, "does not exist"),
        (("x.log",), {"when": None}, "max_bytes > 0"),
        (("x.log",), {"when": "fortnightly"}, "fortnightly"),
        (("x.log",), {"level": "LOUD"}, "unknown log level"),
        ((), {"hub": "carrier-pigeon:/x"}, "carrier-pigeon"),
        ((), {"hub": ""}, "nothing to log to"),
        ((), {"hub": "unix:/tmp/h.sock", "when": "H", "max_bytes": 5}, "max_bytes, when configure log files"),
        (("x.log",), {"when": None, "max_bytes": 10, "utc": True}, "belong to timed rotation"),
        (("x.log",), {"format": "%(asctime)s %(message)s"}, "pass style='%'"),
    ],
)
def test_a_bad_call_is_a_config_error_and_installs_nothing(
    args: tuple[str, ...],
    kwargs: dict[str, object],
    message: str,
    tmp_path: Path,
    root_logger: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLOCKLOG_HUB_ADDRESS", raising=False)
    before = list(root_logger.handlers)
    with pytest.raises(ConfigError, match=message):
        flocklog.configure(*args, **kwargs)  # type: ignore[arg-type]  # deliberately wrong values
    assert root_logger.handlers == before
    assert list(tmp_path.iterdir()) == [], "nothing is created before every argument has been checked"


def test_the_documented_tcp_colon_form_reaches_a_hub_on_that_host_and_port(
    tmp_path: Path, root_logger: logging.Logger, run_id: str
) -> None:
    from flocklog.hub import start_hub

    log_file = tmp_path / "hub.log"
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    hub = start_hub([flocklog.RotatingFileHandler(str(log_file))], address=f"tcp://127.0.0.1:{port}")
    try:
        handler = flocklog.configure(hub=f"tcp:127.0.0.1:{port}")
        # Before: parsed as host "tcp:127.0.0.1", so the client spooled forever towards a name that never resolves.
        assert str(handler.address) == f"tcp://127.0.0.1:{port}"  # type: ignore[attr-defined]
        logging.getLogger("job").warning("over tcp %s", run_id)
        handler.close()
        root_logger.removeHandler(handler)
    finally:
        hub.stop(30)
    assert f"over tcp {run_id}" in log_file.read_text()


def test_a_hub_address_that_cannot_be_parsed_is_a_config_error_at_configure(root_logger: logging.Logger) -> None:
    with pytest.raises(ConfigError, match="cannot parse hub address"):
        flocklog.configure(hub="tcp:nohost")


ALL_OPTIONS: dict[str, object] = {
    "when": None,
    "interval": 1,
    "utc": False,
    "backup_count": 5,
    "max_bytes": 4096,
    "compress": True,
    "max_age": 3600,
    "encoding": "utf-8",
}


def test_every_entry_point_parses_the_same_file_options_into_one_file_settings(tmp_path: Path) -> None:
    """configure(), Celery setup(), gunicorn hooks(), uWSGI, Django and the uvicorn wrapper share one parser."""
    from celery import Celery

    from flocklog._filesettings import FileSettings
    from flocklog.contrib.celery import setup
    from flocklog.contrib.django.conf import logging_settings, read_settings
    from flocklog.contrib.gunicorn import hooks

    log_file = tmp_path / "app.log"
    expected = FileSettings.parse(log_file, **ALL_OPTIONS)  # type: ignore[arg-type]
    assert expected.handler_class == "flocklog.RotatingFileHandler"
    assert hooks(log_file=log_file, **ALL_OPTIONS).settings.files == expected  # type: ignore[arg-type]
    state = setup(Celery("t"), mode="files", log_file=log_file, **ALL_OPTIONS)  # type: ignore[arg-type]
    assert state.settings.files == expected
    django = read_settings({"LOG_FILE": log_file, **{k.upper(): v for k, v in ALL_OPTIONS.items()}})
    assert django.settings.files == expected
    handler = logging_settings(log_file=log_file, **ALL_OPTIONS)["handlers"]["flocklog"]  # type: ignore[arg-type]
    assert handler["class"] == "flocklog.RotatingFileHandler"
    assert handler["max_age"] == 3600 and handler["maxBytes"] == 4096 and handler["compress"] is True
    built = flocklog.configure(log_file, **ALL_OPTIONS)  # type: ignore[arg-type]
    try:
        assert isinstance(built, flocklog.RotatingFileHandler)
        assert (built.maxBytes, built.backupCount, built.max_age) == (4096, 5, 3600)
    finally:
        logging.getLogger().removeHandler(built)
        built.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"when": "fortnightly"}, "not a rotation interval"),
        ({"when": None}, "rotates by size only"),
        ({"interval": 0}, "interval must be a whole number >= 1"),
        ({"backup_count": -1}, "backup_count must be a whole number >= 0"),
        ({"max_bytes": "lots"}, "max_bytes must be a whole number"),
        ({"max_age": 0}, "max_age must be a number of seconds > 0"),
        ({"compress": "maybe"}, "compress must be True or False"),
        ({"encoding": "klingon"}, "not a codec"),
        ({"rotate": True}, "unknown file option"),
    ],
)
def test_one_config_error_per_bad_file_option_from_every_entry_point(
    options: dict[str, object], message: str, tmp_path: Path
) -> None:
    from celery import Celery

    from flocklog._filesettings import FileSettings
    from flocklog.contrib.celery import setup
    from flocklog.contrib.django.conf import read_settings

    log_file = tmp_path / "app.log"
    with pytest.raises(ConfigError, match=message):
        FileSettings.parse(log_file, **options)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=message):
        setup(Celery("t"), mode="files", log_file=log_file, **options)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown FLOCKLOG keys" if "rotate" in options else message):
        read_settings({"LOG_FILE": log_file, **{k.upper(): v for k, v in options.items()}})
    if "rotate" not in options:
        with pytest.raises(ConfigError, match=message):
            flocklog.configure(log_file, **options)  # type: ignore[arg-type]


def test_configure_format_json_writes_one_json_object_per_line(tmp_path: Path) -> None:
    """``format="json"`` is the JSON-lines switch; any other format is a byte-identical ``flocklog.Formatter``."""
    log_file = tmp_path / "app.log"
    code = (
        "import logging, flocklog\n"
        f"flocklog.configure({str(log_file)!r}, when=None, max_bytes=10_000_000, format='json')\n"
        "logging.getLogger('jobs').warning('line one\\nline two', extra={'job': 7})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    lines = log_file.read_text().splitlines()
    assert len(lines) == 1
    obj = json.loads(lines[0])
    assert (obj["level"], obj["logger"], obj["message"], obj["job"]) == ("WARNING", "jobs", "line one\nline two", 7)
    assert obj["time"].endswith("Z")


def test_integration_logging_dicts_use_flocklog_formatters() -> None:
    from flocklog.contrib.django import logging_settings
    from flocklog.contrib.uvicorn import log_config

    for config in (logging_settings(mode="hub", format="json"), log_config(format="json")):
        logging.config.dictConfig({**config, "root": {"handlers": [], "level": "INFO"}, "handlers": {}})
        built = logging.config.DictConfigurator(config).configure_formatter(config["formatters"]["flocklog"])
        assert isinstance(built, flocklog.JSONFormatter), built
    text = logging_settings(mode="hub", format="{message}")["formatters"]["flocklog"]
    built = logging.config.DictConfigurator({}).configure_formatter(dict(text))
    assert isinstance(built, flocklog.Formatter)


def test_file_mode_reaches_the_handler_from_every_entry_point(tmp_path: Path) -> None:
    """Logs shared between users need their permission bits set; every entry point takes ``file_mode``."""
    import os
    import stat

    from flocklog._filesettings import FileSettings
    from flocklog.contrib.django import logging_settings

    log_file = tmp_path / "shared.log"
    code = (
        "import logging, os, flocklog\n"
        "os.umask(0o077)\n"  # a umask that would hide the set from the group, overridden by file_mode
        f"flocklog.configure({str(log_file)!r}, file_mode='0640')\n"
        "logging.getLogger('x').warning('shared')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert stat.S_IMODE(os.stat(log_file).st_mode) == 0o640
    handler = logging_settings(log_file=tmp_path / "d.log", file_mode=0o640)["handlers"]["flocklog"]
    assert handler["file_mode"] == 0o640
    with pytest.raises(ConfigError, match="file_mode"):
        FileSettings.parse(tmp_path / "e.log", file_mode="rw-r-----")
