"""The pipeline's environment settings: one typed object, one parser, one clear ConfigError per bad value.

In the bottom layer beside :mod:`flocklog._filesettings`, so any part (the store, the CLI, the contrib
integrations) can read them without importing the pipeline.

Every ``FLOCKLOG_*`` variable the producer, the worker and ``flocklog status`` read is described once in
``_NUMBERS`` / :class:`PipelineSettings`; the small functions below (``broker_timeout()`` ...) are views of one
field each, kept because the worker and the CLI call them by name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flocklog.errors import ConfigError
from flocklog.record import DEFAULT_MAX_RECORD_BYTES  # its one home, beside the check that applies it

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "DEFAULT_SPOOL_DIR",
    "DEFAULT_VISIBILITY_TIMEOUT",
    "MIN_RECEIPT_TIMEOUT",
    "TRANSPORTS",
    "PipelineSettings",
    "adopt_spools",
    "batch_format",
    "broker_timeout",
    "check_at_least",
    "check_settings",
    "default_receipt_timeout",
    "env_flag",
    "env_number",
    "max_record_bytes",
    "resolve_spool_dir",
    "task_max_retries",
    "transport_kind",
    "visibility_timeout",
]

DEFAULT_SPOOL_DIR = ".flocklog/spool"
TRANSPORTS = ("celery", "direct", "spool")
MIN_RECEIPT_TIMEOUT = 0.1  # 0 would resend every outstanding batch at each check
#: Seconds a batch may stay unacked on Redis before any worker's sweep hands it out again. kombu's own default
#: (3600) leaves the batches of a SIGKILLed worker stranded for an hour. 60 s is well above a batch write (ms) and
#: a retry's countdown (at most 30 s, held unacked by the worker until it is due); a batch redelivered early
#: anyway is written twice and stored once (``ON CONFLICT DO NOTHING``).
DEFAULT_VISIBILITY_TIMEOUT = 60.0

# field -> (variable, default, whole number?, minimum, maximum)
_NUMBERS: dict[str, tuple[str, float, bool, float, float]] = {
    "broker_timeout": ("FLOCKLOG_BROKER_TIMEOUT", 3.0, False, 0.001, math.inf),
    "visibility_timeout": ("FLOCKLOG_VISIBILITY_TIMEOUT", DEFAULT_VISIBILITY_TIMEOUT, False, 1.0, math.inf),
    "receipt_timeout": ("FLOCKLOG_RECEIPT_TIMEOUT", 60.0, False, MIN_RECEIPT_TIMEOUT, math.inf),
    "task_max_retries": ("FLOCKLOG_TASK_MAX_RETRIES", 8, True, 0.0, math.inf),
    "max_record_bytes": ("FLOCKLOG_MAX_RECORD_BYTES", DEFAULT_MAX_RECORD_BYTES, True, 64.0, math.inf),
    "batch_format": ("FLOCKLOG_BATCH_FORMAT", 2, True, 1.0, 2.0),
}
# field -> (variable, default)
_FLAGS: dict[str, tuple[str, bool]] = {
    "adopt_spools": ("FLOCKLOG_ADOPT_SPOOLS", True),
}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class PipelineSettings:
    """What the environment says about the pipeline (defaults where it says nothing)."""

    transport: str = "celery"
    spool_dir: Path = Path(DEFAULT_SPOOL_DIR)
    broker_timeout: float = 3.0
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    receipt_timeout: float = 60.0
    task_max_retries: int = 8
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    batch_format: int = 2
    adopt_spools: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineSettings:
        """Parse every variable; all bad values are reported together, one clause each, in one ConfigError."""
        env = os.environ if environ is None else environ
        errors: list[str] = []
        values: dict[str, float] = {}
        for field in _NUMBERS:
            try:
                values[field] = _parse(field, env)
            except ConfigError as exc:
                errors.append(str(exc))
        flags: dict[str, bool] = {}
        for field, (name, default) in _FLAGS.items():
            try:
                flags[field] = env_flag(name, default, environ=env)
            except ConfigError as exc:
                errors.append(str(exc))
        try:
            transport = transport_kind(None, env)
        except ConfigError as exc:
            errors.append(str(exc))
            transport = "celery"
        if errors:
            raise ConfigError("; ".join(errors))
        return cls(
            transport=transport,
            spool_dir=resolve_spool_dir(None, env),
            broker_timeout=values["broker_timeout"],
            visibility_timeout=values["visibility_timeout"],
            receipt_timeout=values["receipt_timeout"],
            task_max_retries=int(values["task_max_retries"]),
            max_record_bytes=int(values["max_record_bytes"]),
            batch_format=int(values["batch_format"]),
            adopt_spools=flags["adopt_spools"],
        )


def _parse(field: str, env: Mapping[str, str]) -> float:
    name, default, integer, minimum, maximum = _NUMBERS[field]
    value = env_number(name, default, integer=integer, minimum=minimum, environ=env)
    if value > maximum:
        raise ConfigError(f"{name}={env.get(name)!r} must be at most {maximum:g}")
    return value


def env_number(
    name: str,
    default: float,
    *,
    integer: bool = False,
    minimum: float = 0.0,
    environ: Mapping[str, str] | None = None,
) -> float:
    """``$name`` as a number: a typo there is a :class:`ConfigError` naming the variable at start-up, not a
    ``ValueError`` from deep inside Celery's configuration or a sender thread."""
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name}={raw!r} is not {kind}") from None
    return check_at_least(f"{name}={raw!r}", value, minimum)


def env_flag(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    """``$name`` as a yes/no: ``1/true/yes/on`` or ``0/false/no/off`` (any case). Anything else is a
    :class:`ConfigError` naming the variable: a typo such as ``maybe`` must not quietly mean "on"."""
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a yes/no value: use one of {', '.join(_TRUE + _FALSE)}")


def check_at_least(what: str, value: float, minimum: float) -> float:
    """``value`` if it is finite and at least ``minimum``; NaN and inf are refused too (redis-py overflows on inf
    later), with a ConfigError that starts with ``what``."""
    if not minimum <= value < math.inf:
        raise ConfigError(f"{what} must be a finite number of at least {minimum:g}")
    return value


def broker_timeout() -> float:
    """Seconds for every connect and socket wait on the broker (``$FLOCKLOG_BROKER_TIMEOUT``, default 3)."""
    return _parse("broker_timeout", os.environ)


def visibility_timeout() -> float:
    """Seconds before Redis redelivers a batch a dead worker held (``$FLOCKLOG_VISIBILITY_TIMEOUT``, 60)."""
    return _parse("visibility_timeout", os.environ)


def default_receipt_timeout() -> float:
    """Seconds a producer waits for a batch's receipt before resending it (``$FLOCKLOG_RECEIPT_TIMEOUT``, 60)."""
    return _parse("receipt_timeout", os.environ)


def task_max_retries() -> int:
    """Database retries of one batch before it goes to the dead letters (``$FLOCKLOG_TASK_MAX_RETRIES``, 8)."""
    return int(_parse("task_max_retries", os.environ))


def max_record_bytes() -> int:
    """The largest record ``log()`` accepts (``$FLOCKLOG_MAX_RECORD_BYTES``, 256 KiB)."""
    return int(_parse("max_record_bytes", os.environ))


def batch_format() -> int:
    """The Celery batch format a producer sends (``$FLOCKLOG_BATCH_FORMAT``, default 2, packed). Set 1 during a
    rolling upgrade while workers older than the packed format still run: they read only format 1, and keep a
    packed batch aside as refused (``*.refused``, which no replay reads). Workers read both."""
    return int(_parse("batch_format", os.environ))


def adopt_spools() -> bool:
    """Does the worker replay the spools of exited producers? (``$FLOCKLOG_ADOPT_SPOOLS``, default yes)."""
    name, default = _FLAGS["adopt_spools"]
    return env_flag(name, default)


def resolve_spool_dir(
    spool_dir: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    env = os.environ if environ is None else environ
    return Path(spool_dir or env.get("FLOCKLOG_SPOOL_DIR") or DEFAULT_SPOOL_DIR)


def transport_kind(kind: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The transport asked for, else ``$FLOCKLOG_TRANSPORT``, else celery; an unknown name is a ConfigError."""
    kind = kind or (os.environ if environ is None else environ).get("FLOCKLOG_TRANSPORT") or "celery"
    if kind not in TRANSPORTS:
        raise ConfigError(f"unknown transport {kind!r}: use {', '.join(TRANSPORTS)}")
    return kind


def check_settings(kind: str | None) -> None:
    """Check now, in the caller, what the transport will read when the sender thread builds it later: a mistake
    there would otherwise surface only as a stream of spooled batches. The Celery transport reads them all."""
    if transport_kind(kind) == "celery":
        PipelineSettings.from_env()
    else:
        max_record_bytes()
