"""Construction-time checks: the stdlib's and concurrent-log-handler's arguments turned into one checked
``Options``, and the log directory looked at, so a bad setting fails at start-up with its reason, never later on
the first record in some worker (and no option is ever dropped without a word)."""

from __future__ import annotations

import codecs
import errno
import math
import os
import stat
from dataclasses import dataclass
from typing import Any

from flocklog.errors import ConfigError
from flocklog.files._lock import Permissions


class LogDirectoryNotFoundError(FileNotFoundError, ConfigError):
    """The log file's directory does not exist: a ``ConfigError`` and, as with the stdlib, a ``FileNotFoundError``."""


def check_directory(path: str) -> None:
    """Fail at construction, with the reason, rather than on the first record in some worker much later."""
    directory = os.path.dirname(path) or "."
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        raise LogDirectoryNotFoundError(
            errno.ENOENT, f"log directory {directory!r} does not exist: create it, or point the handler elsewhere", path
        ) from None
    except PermissionError:
        raise ConfigError(
            f"log directory {directory!r} cannot be reached by this process (uid {_uid()}): "
            "a parent directory denies access"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{directory!r} is not a directory, so {os.path.basename(path)!r} cannot live in it")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"log directory {directory!r} is not writable by this process (uid {_uid()})")
    if os.path.isdir(path):
        raise ConfigError(f"log file {path!r} is a directory")


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else -1


def count_argument(name: str, value: Any, *, whole: bool) -> Any:
    """``maxBytes``/``backupCount``/``interval``: any real number >= 0, as the stdlib accepts (``1024.0`` too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
    if whole:
        if value != int(value):
            raise ConfigError(f"{name} must be a whole number, got {value!r}")
        return int(value)
    return int(value) if value == int(value) else value


@dataclass
class Options:
    """Everything beyond the stdlib's arguments, checked once (concurrent-log-handler's names included)."""

    compress: bool
    max_age: float | None
    lock_file: str | None
    lock_file_directory: str | None
    permissions: Permissions
    newline: str | None
    terminator: str | None
    unicode_error_policy: str | None
    keep_file_open: bool
    lock_per_record: bool
    rotate_on_start: bool
    debug: bool
    raw: dict[str, Any]  # the concurrent-log-handler options as given, exposed as attributes like clh does


def options_from_arguments(
    compress: bool,
    use_gzip: bool | None,
    max_age: float | None,
    lock_file: str | os.PathLike[str] | None,
    lock_file_directory: str | os.PathLike[str] | None,
    file_mode: int | None,
    chmod: int | None,
    umask: int | None,
    owner: tuple[str | int, str | int] | list[str | int] | None,
    newline: str | None,
    terminator: str | None,
    unicode_error_policy: str | None,
    keep_file_open: bool,
    lock_per_record: bool | None,
    rotate_on_start: bool,
    debug: bool,
    legacy: dict[str, Any],
) -> Options:
    """The handlers' extra arguments, in their signature's order, checked once; a bad one is a ``ConfigError``."""
    legacy.pop("delay", None)  # concurrent-log-handler's own ``delay`` is accepted and ignored there too
    if legacy:
        raise ConfigError(
            f"unsupported option(s) {', '.join(sorted(legacy))}: flocklog's handlers take the stdlib's and "
            "concurrent-log-handler's arguments (see the README's option table)"
        )
    if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or max_age <= 0):
        raise ConfigError(f"max_age must be a positive number of seconds, got {max_age!r}")
    if file_mode is not None and chmod is not None and file_mode != chmod:
        raise ConfigError(f"file_mode={file_mode:#o} and chmod={chmod:#o} disagree: give one of them")
    bits = file_mode if file_mode is not None else chmod
    if bits is not None and (not isinstance(bits, int) or not 0 <= bits <= 0o7777):
        raise ConfigError(f"file_mode/chmod must be permission bits such as 0o640, got {bits!r}")
    if umask is not None:
        if not isinstance(umask, int) or not 0 <= umask <= 0o777:
            raise ConfigError(f"umask must be bits such as 0o027, got {umask!r}")
        if bits is None:
            bits = 0o666 & ~umask  # what a file created under that umask gets, without touching the process umask
    uid = gid = -1
    if owner is not None:
        uid, gid = _resolve_owner(owner)
    if newline not in (None, "", "\n", "\r", "\r\n"):
        raise ConfigError(f"newline must be None, '', '\\n', '\\r' or '\\r\\n', got {newline!r}")
    if unicode_error_policy is not None:
        try:
            codecs.lookup_error(unicode_error_policy)
        except LookupError:
            raise ConfigError(
                f"unicode_error_policy {unicode_error_policy!r} is not an error handler: use 'ignore', 'replace' "
                "or 'strict'"
            ) from None
    if lock_file is not None and lock_file_directory is not None:
        raise ConfigError("lock_file and lock_file_directory both say where the lock goes: give one of them")
    if lock_per_record is None:
        lock_per_record = os.name == "nt"  # appends are not atomic across processes on Windows
    if os.name == "nt" and not lock_per_record:
        raise ConfigError("lock_per_record=False cannot be honoured on Windows: appends are not atomic there")
    return Options(
        compress=bool(compress if use_gzip is None else use_gzip),
        max_age=max_age,
        lock_file=os.fspath(lock_file) if lock_file is not None else None,
        lock_file_directory=os.fspath(lock_file_directory) if lock_file_directory is not None else None,
        permissions=Permissions(bits, uid, gid, enforce=file_mode is not None or chmod is not None or uid != -1),
        newline=newline,
        terminator=terminator,
        unicode_error_policy=unicode_error_policy,
        # Windows cannot rename a file another process holds open, so (as clh does there) none is kept open.
        keep_file_open=bool(keep_file_open) and os.name != "nt",
        lock_per_record=bool(lock_per_record),
        rotate_on_start=bool(rotate_on_start),
        debug=bool(debug),
        raw={"owner": owner, "chmod": bits, "umask": umask, "newline": newline, "use_gzip": bool(compress or use_gzip)},
    )


def _resolve_owner(owner: Any) -> tuple[int, int]:
    """concurrent-log-handler's ``owner=(user, group)``: names or ids, resolved now so a typo fails at once."""
    try:
        user, group = owner
    except (TypeError, ValueError):
        raise ConfigError(f"owner must be a (user, group) pair, got {owner!r}") from None
    try:
        import grp
        import pwd
    except ImportError:
        raise ConfigError("owner cannot be honoured on this platform (no users and groups)") from None
    try:
        uid = user if isinstance(user, int) else pwd.getpwnam(user).pw_uid
        gid = group if isinstance(group, int) else grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise ConfigError(f"owner {owner!r}: unknown user or group {exc}") from None
    return uid, gid
