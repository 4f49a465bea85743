"""The one exception hierarchy of flocklog: every error a user can meet, each saying what to do next."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FlocklogError",
    "FrameError",
    "HubError",
    "PipelineError",
    "SerializationError",
    "StoreError",
]


class FlocklogError(Exception):
    """Root of every error flocklog raises on purpose; catch this to catch them all."""


class ConfigError(FlocklogError, ValueError):
    """A handler, hub or pipeline was configured with something that cannot work.

    Subclasses ``ValueError`` so code written for the stdlib handlers (which raise ``ValueError`` for a bad
    ``when``) keeps catching it.
    """


class HubError(FlocklogError):
    """The log hub could not be started, reached or spoken to."""


class FrameError(HubError):
    """A hub frame was malformed, oversized or failed authentication."""


class PipelineError(FlocklogError):
    """The execution-log pipeline could not ship or store a batch."""


class StoreError(PipelineError):
    """The database behind the pipeline refused or failed a write."""


class SerializationError(PipelineError, TypeError):
    """A record carries a field that cannot be turned into JSON."""
