"""``flocklog serve``: run a hub as its own process (graceful SIGTERM, SIGHUP reopens files)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from flocklog.errors import ConfigError, FlocklogError

# Plain copies of the hub's defaults: importing the hub here would load it for every CLI command.
DEFAULT_MAX_MEMORY = 64 * 1024 * 1024
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_MAX_FRAME = 1024 * 1024


def load_config(path: str) -> dict[str, Any]:
    """A logging dictConfig dict from a JSON, TOML or YAML file (by extension)."""
    text = Path(path).read_text(encoding="utf-8")
    suffix = Path(path).suffix.lower()
    data: Any
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - Python 3.10
            import tomli as tomllib  # type: ignore[import-not-found]  # only on Python 3.10
        data = tomllib.loads(text)
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise ConfigError(f"{path} is YAML: install PyYAML (pip install pyyaml) or use JSON/TOML") from exc
        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a logging dictConfig mapping")
    return data


def register(group: click.Group) -> None:
    @group.command()
    @click.option(
        "--config",
        "config_path",
        default=None,
        type=click.Path(exists=True, dir_okay=False),
        help="logging dictConfig file (JSON, TOML or YAML); its root handlers write the records.",
    )
    @click.option("--stdout", "to_stdout", is_flag=True, help="Also write every record to stdout as JSON lines.")
    @click.option("--unix", "unix_path", default=None, help="Listen on this Unix socket path (mode 0600).")
    @click.option("--tcp", "tcp_addr", default=None, help="Listen on HOST:PORT (non-loopback needs --secret).")
    @click.option("--secret", envvar="FLOCKLOG_HUB_SECRET", default=None, help="Shared secret: frames are HMAC'd.")
    @click.option(
        "--drain-timeout",
        type=float,
        default=10.0,
        show_default=True,
        help="Seconds to write what was received after SIGTERM.",
    )
    @click.option(
        "--max-memory",
        type=int,
        default=DEFAULT_MAX_MEMORY,
        show_default=True,
        help="Bytes the hub may hold for its writer; past it, it stops reading (back-pressure).",
    )
    @click.option(
        "--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, show_default=True, help="Open connections cap."
    )
    @click.option("--max-frame", type=int, default=DEFAULT_MAX_FRAME, show_default=True, help="Frame size limit.")
    @click.option("--idle-timeout", type=float, default=300.0, show_default=True, help="Close silent connections.")
    @click.option(
        "--handshake-timeout",
        type=float,
        default=10.0,
        show_default=True,
        help="Close connections that send no valid frame in time.",
    )
    @click.option(
        "--state",
        "state_path",
        default=None,
        help="De-duplication watermark file (default: next to the Unix socket, or in a private temp directory).",
    )
    @click.option(
        "--spool-dir",
        default=None,
        help="Replay spools exited writers left here (default: $FLOCKLOG_HUB_SPOOL_DIR, else the clients' one).",
    )
    @click.option(
        "--adopt-spools/--no-adopt-spools",
        default=True,
        show_default=True,
        help="Look for abandoned client spools every second and replay them into this hub.",
    )
    def serve(
        config_path: str | None,
        to_stdout: bool,
        unix_path: str | None,
        tcp_addr: str | None,
        secret: str | None,
        drain_timeout: float,
        max_memory: int,
        max_connections: int,
        max_frame: int,
        idle_timeout: float,
        handshake_timeout: float,
        state_path: str | None,
        spool_dir: str | None,
        adopt_spools: bool,
    ) -> None:
        """Run a log hub: clients (flocklog.HubHandler) send records, this process writes them once."""
        import signal
        import threading

        from flocklog.hub._address import ENV_ADDRESS
        from flocklog.hub.server import Hub, default_state_path, handlers_from_config, return_frames_to_the_system

        return_frames_to_the_system()  # this process is the hub's own: its allocator may be set for it

        addresses = []
        if unix_path:
            addresses.append(f"unix:{unix_path}")
        if tcp_addr:
            addresses.append(tcp_addr if tcp_addr.startswith("tcp://") else f"tcp://{tcp_addr}")
        if not addresses:
            env = os.environ.get(ENV_ADDRESS)
            if not env:
                raise click.UsageError(f"give --unix PATH and/or --tcp HOST:PORT (or set {ENV_ADDRESS})")
            addresses.append(env)
        try:
            from flocklog.hub.sinks import stdout_config

            config = load_config(config_path) if config_path else None
            if to_stdout:
                config = stdout_config(config)
            if config is None:
                raise click.UsageError("give --config FILE and/or --stdout")
            handlers = handlers_from_config(config)
            hub = Hub(
                handlers,
                addresses=addresses,
                secret=secret,
                max_frame=max_frame,
                max_memory=max_memory,
                max_connections=max_connections,
                idle_timeout=idle_timeout,
                handshake_timeout=handshake_timeout,
                state_path=state_path or default_state_path(addresses),
            )
        except (FlocklogError, OSError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
        if hasattr(signal, "SIGHUP"):  # not on Windows
            signal.signal(signal.SIGHUP, lambda signum, frame: hub.reopen())
        click.echo(f"flocklog hub pid {hub.pid} listening on {', '.join(hub.addresses)}", err=True)
        adopter = None
        if adopt_spools:
            from flocklog.hub._adopter import SpoolAdopter
            from flocklog.hub._spool import default_spool_dir

            adopter = SpoolAdopter(hub.addresses[0], secret, spool_dir or default_spool_dir())
        failed = False
        while True:
            if adopter is not None:
                try:
                    adopter.poll()
                except Exception as exc:  # never the end of the hub; said once
                    if not failed:
                        click.echo(f"flocklog hub: cannot replay abandoned spools: {exc}", err=True)
                    failed = True
            if stop.wait(0.5):
                break
        if adopter is not None:
            with contextlib.suppress(Exception):
                adopter.close()
        hub.stop(timeout=drain_timeout)
        status = hub.status()
        for handler in handlers:
            try:
                handler.close()
            except Exception as exc:  # a handler failing to close must not turn a clean stop into a crash
                click.echo(f"flocklog hub: closing {handler!r} failed: {exc}", err=True)
        click.echo(
            f"flocklog hub stopped: {status['records_written']} records written, {status['malformed']} malformed, "
            f"{status['auth_failed']} unauthenticated frames, {status['records_repaired']} repaired, "
            f"{status['records_skipped']} skipped, {status['connections_refused']} connections refused",
            err=True,
        )
