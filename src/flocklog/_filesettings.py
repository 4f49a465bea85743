"""The shared file-handler options (``FileSettings``): one definition, one parser, one ConfigError per bad value.

Every entry point that lets a user name a log file -- ``configure()``, Celery ``setup()``, gunicorn ``hooks()``,
uWSGI ``install()``, the Django ``FLOCKLOG`` setting and the uvicorn wrapper -- builds its options through
:meth:`FileSettings.parse`, so they accept the same names, the same defaults and the same size-only rotation
(``when=None, max_bytes=...``). Bottom layer: imports only :mod:`flocklog.errors` and the standard library; the
handler itself is named by class path (:meth:`FileSettings.handler_config`) and built one layer up.
"""

from __future__ import annotations

import codecs
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from flocklog.errors import ConfigError

__all__ = ["DEFAULTS", "FILE_OPTIONS", "FileOptions", "FileSettings", "parse_when"]

#: The option names every entry point accepts (keyword arguments; ``FLOCKLOG`` keys are their upper case).
FILE_OPTIONS = (
    "when",
    "interval",
    "utc",
    "backup_count",
    "max_bytes",
    "compress",
    "max_age",
    "encoding",
    "file_mode",
)

#: The defaults every entry point shares: rotate at local midnight, keep a week.
DEFAULTS: dict[str, Any] = {
    "when": "midnight",
    "interval": 1,
    "utc": False,
    "backup_count": 7,
    "max_bytes": 0,
    "compress": False,
    "max_age": None,
    "encoding": "utf-8",
    "file_mode": None,  # permission bits of the log, its archives and lock file (None: the umask decides)
}


class FileOptions(TypedDict, total=False):
    """The file options as keyword arguments (``**options: Unpack[FileOptions]`` in every entry point)."""

    when: str | None
    interval: int
    utc: bool
    backup_count: int
    max_bytes: int
    compress: bool
    max_age: float | None
    encoding: str
    file_mode: int | str | None


_WHEN = re.compile(r"S|M|H|D|MIDNIGHT|W[0-6]")
_NO_WHEN = ("", "none", "size")


def parse_when(value: object) -> str | None:
    """``when`` as the handlers take it; ``None`` (or ``"none"``/``"size"``/``""`` from a CLI or env) = size only."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"when must be a string such as 'midnight', 'H' or 'W0', or None, got {value!r}")
    if value.strip().lower() in _NO_WHEN:
        return None
    if not _WHEN.fullmatch(value.strip().upper()):
        raise ConfigError(
            f"when={value!r} is not a rotation interval: use S, M, H, D, midnight or W0-W6 (W0 is Monday), "
            "or when=None with max_bytes=... to rotate by size only"
        )
    return value.strip()


def _whole(name: str, value: object, minimum: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)  # from an environment variable or a CLI
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def _flag(name: str, value: object) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")
    return value


def _max_age(value: object) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"max_age must be a number of seconds > 0 or None, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"max_age must be a number of seconds > 0 or None, got {value!r}")
    return float(value)


def _file_mode(value: object) -> int | None:
    """Permission bits such as ``0o640``; from an environment variable or a CLI, an octal string (``"0640"``)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip(), 8)
        except ValueError:
            raise ConfigError(f"file_mode must be octal permission bits such as '0640', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o7777:
        raise ConfigError(f"file_mode must be permission bits such as 0o640, got {value!r}")
    return value


def _encoding(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"encoding must be a codec name such as 'utf-8', got {value!r}")
    try:
        codecs.lookup(value)
    except LookupError:
        raise ConfigError(f"encoding {value!r} is not a codec Python knows: use 'utf-8'") from None
    return value


@dataclass(frozen=True)
class FileSettings:
    """One rotating file set: where it lives and how it rotates. Build it with :meth:`parse`, which checks.

    ``when=None`` rotates by size only (``max_bytes`` > 0, a :class:`flocklog.RotatingFileHandler`); otherwise a
    :class:`flocklog.TimedRotatingFileHandler` rotates at ``when`` and also at ``max_bytes`` when set.
    """

    path: str
    when: str | None = "midnight"
    interval: int = 1
    utc: bool = False
    backup_count: int = 7
    max_bytes: int = 0
    compress: bool = False
    max_age: float | None = None
    encoding: str = "utf-8"
    file_mode: int | None = None

    @classmethod
    def parse(cls, path: str | os.PathLike[str], **options: Any) -> FileSettings:
        """Check every option (names from :data:`FILE_OPTIONS`) and resolve ``path`` now, against the cwd.

        Values may be Python values or the strings an environment variable or a command line gives.
        """
        unknown = sorted(set(options) - set(FILE_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown file option(s) {', '.join(unknown)}: the options are {', '.join(FILE_OPTIONS)}")
        given = {**DEFAULTS, **options}
        if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
            raise ConfigError(f"log file must be a path such as 'logs/app.log', got {path!r}")
        when = parse_when(given["when"])
        interval = _whole("interval", given["interval"], 1)
        utc = _flag("utc", given["utc"])
        max_bytes = _whole("max_bytes", given["max_bytes"], 0)
        if when is None:
            if max_bytes <= 0:
                raise ConfigError("when=None rotates by size only: give max_bytes > 0 (or a when, such as 'midnight')")
            if interval != 1 or utc:
                raise ConfigError("interval and utc belong to timed rotation, and when=None rotates by size only")
        return cls(
            path=str(Path(os.fspath(path)).expanduser().resolve()),
            when=when,
            interval=interval,
            utc=utc,
            backup_count=_whole("backup_count", given["backup_count"], 0),
            max_bytes=max_bytes,
            compress=_flag("compress", given["compress"]),
            max_age=_max_age(given["max_age"]),
            encoding=_encoding(given["encoding"]),
            file_mode=_file_mode(given["file_mode"]),
        )

    def options(self) -> dict[str, Any]:
        """The options as :meth:`parse` takes them (to pass on, or to compare with :data:`DEFAULTS`)."""
        return {name: getattr(self, name) for name in FILE_OPTIONS}

    def check_directory(self) -> None:
        """Fail at start-up, in one sentence, on what would otherwise be a traceback at the first record."""
        directory = Path(self.path).parent
        if not directory.is_dir():
            raise ConfigError(
                f"log directory {str(directory)!r} does not exist: create it (mkdir -p {directory}) "
                "or point the log file elsewhere"
            )
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ConfigError(f"log directory {str(directory)!r} is not writable by uid {os.getuid()}: fix its mode")

    @property
    def handler_class(self) -> str:
        """The class path of the handler these options build (what dictConfig's ``class`` takes)."""
        return "flocklog.RotatingFileHandler" if self.when is None else "flocklog.TimedRotatingFileHandler"

    def handler_kwargs(self) -> dict[str, Any]:
        """The handler's constructor arguments (stdlib names, plus flocklog's ``compress`` and ``max_age``)."""
        kwargs: dict[str, Any] = {
            "filename": self.path,
            "backupCount": self.backup_count,
            "maxBytes": self.max_bytes,
            "encoding": self.encoding,
            "compress": self.compress,
            "max_age": self.max_age,
        }
        if self.file_mode is not None:  # logs shared between users (a group-readable set)
            kwargs["file_mode"] = self.file_mode
        if self.when is not None:
            kwargs.update(when=self.when, interval=self.interval, utc=self.utc)
        return kwargs

    def handler_config(self, formatter: str | None = None) -> dict[str, Any]:
        """The dictConfig entry of the file handler (a class path, so it also works in a plain ``LOGGING``)."""
        entry: dict[str, Any] = {"class": self.handler_class, **self.handler_kwargs()}
        if formatter is not None:
            entry["formatter"] = formatter
        return entry
