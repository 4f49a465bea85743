"""The OpenTelemetry sink: the hub exports logs over OTLP (HTTP/protobuf or gRPC) with the official exporters.

Why in the hub: the SDK's ``BatchLogRecordProcessor`` keeps its records in a thread and a buffer of the process
that set it up; a prefork server's workers (gunicorn, uWSGI, Celery) inherit neither a running thread nor a
flushed buffer, so records are lost or each worker needs its own set-up hook. Workers log to the hub through
``HubHandler`` (fork-safe, spooled); the hub is one long-lived process, and it alone holds the exporter.

Records are exported through the SDK's ``OTLPLogExporter`` classes from this sink's own sender thread, with the
shared queue and disk spool in front of them (not the SDK's batch processor, which drops what it cannot send).
Resource: ``service.name``, ``host.name`` and any ``resource_attributes`` (plus ``OTEL_RESOURCE_ATTRIBUTES``);
the instrumentation scope is the record's logger; attributes: the worker's ``process.pid``, ``thread.id``,
``thread.name``, ``logger.name``, ``code.*``, ``exception.stacktrace`` and the record's ``extra`` fields.
Needs the ``otel`` extra: ``pip install 'flocklog[otel]'``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from flocklog.errors import ConfigError
from flocklog.hub.sinks._base import SinkHandler
from flocklog.hub.sinks._fields import exception_text, extras, stack_text

PROTOCOLS = ("http/protobuf", "grpc")
_SCALAR = (str, bool, int, float)


def severity_number(levelno: int) -> int:
    """Python level -> OTel SeverityNumber: DEBUG 5, INFO 9, WARNING 13, ERROR 17, CRITICAL 21 (TRACE 1 below)."""
    if levelno >= logging.CRITICAL:
        return 21
    if levelno >= logging.ERROR:
        return 17
    if levelno >= logging.WARNING:
        return 13
    if levelno >= logging.INFO:
        return 9
    if levelno >= logging.DEBUG:
        return 5
    return 1


def _attribute(value: Any) -> Any:
    """OTLP attribute values are scalars or homogeneous lists of scalars: anything else becomes text."""
    if isinstance(value, _SCALAR):
        return value
    if isinstance(value, list) and value and all(type(v) is type(value[0]) and isinstance(v, _SCALAR) for v in value):
        return value
    return str(value)


class OTLPHandler(SinkHandler):
    """Exports the hub's records over OTLP; ``protocol`` is ``"http/protobuf"`` (default) or ``"grpc"``.

    ``endpoint`` defaults to the SDK's own (``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT``, else ``localhost:4318/v1/logs``
    for HTTP and ``localhost:4317`` for gRPC). ``timeout`` bounds one export attempt, the SDK's retries
    included; what fails is spooled and retried by the sink.
    """

    kind = "otlp"

    def __init__(
        self,
        level: int | str = logging.NOTSET,
        *,
        endpoint: str | None = None,
        protocol: str = "http/protobuf",
        service_name: str | None = None,
        resource_attributes: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        insecure: bool | None = None,
        **options: Any,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ConfigError(f"OTLPHandler protocol={protocol!r}: use one of {', '.join(PROTOCOLS)}")
        try:
            from opentelemetry.sdk.resources import Resource
        except ImportError as exc:
            raise ConfigError("OTLPHandler needs the otel extra: pip install 'flocklog[otel]'") from exc
        self.protocol = protocol
        self.endpoint = endpoint
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.insecure = insecure
        attributes: dict[str, Any] = {"host.name": socket.gethostname()}
        if service_name or not os.environ.get("OTEL_SERVICE_NAME"):
            attributes["service.name"] = service_name or "flocklog"
        attributes.update(resource_attributes or {})
        self.resource = Resource.create(attributes)
        self._exporter: Any = None
        self._make_exporter()  # fail at config time on a bad endpoint or a missing exporter package
        super().__init__(level, **options)

    def _make_exporter(self) -> Any:
        try:
            if self.protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcExporter

                insecure = self.insecure
                if insecure is None and self.endpoint is not None:
                    insecure = self.endpoint.startswith("http://") or "://" not in self.endpoint
                self._exporter = GrpcExporter(
                    endpoint=self.endpoint, insecure=insecure, headers=self.headers or None, timeout=self.timeout
                )
            else:
                from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpExporter

                self._exporter = HttpExporter(
                    endpoint=self.endpoint, headers=self.headers or None, timeout=self.timeout
                )
        except ImportError as exc:
            raise ConfigError(
                f"OTLPHandler ({self.protocol}) needs the otel extra: pip install 'flocklog[otel]'"
            ) from exc
        return self._exporter

    def prepare(self, record: logging.LogRecord) -> Any:
        attrs: dict[str, Any] = {
            "process.pid": record.process,
            "process.name": record.processName,
            "thread.id": record.thread,
            "thread.name": record.threadName,
            "logger.name": record.name,
            "code.function.name": record.funcName,
            "code.line.number": record.lineno,
            "code.module": record.module,
        }
        exc = exception_text(record, self.formatter)
        if exc:
            attrs["exception.stacktrace"] = exc
        stack = stack_text(record)
        if stack:
            attrs["code.stacktrace"] = stack
        for key, value in extras(record).items():
            attrs.setdefault(key, _attribute(value))
        return {
            "t": int(record.created * 1e9),
            "n": record.levelno,
            "lv": record.levelname,
            "lg": record.name,
            "body": self.format(record),
            "attrs": {k: v for k, v in attrs.items() if v is not None},
        }

    def deliver(self, items: list[Any]) -> None:
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.sdk._logs import ReadableLogRecord
        from opentelemetry.sdk._logs.export import LogRecordExportResult
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        exporter = self._exporter if self._exporter is not None else self._make_exporter()
        scopes: dict[str, InstrumentationScope] = {}
        batch = []
        for item in items:
            scope = scopes.get(item["lg"])
            if scope is None:
                scope = scopes[item["lg"]] = InstrumentationScope(item["lg"])
            log_record = LogRecord(
                timestamp=item["t"],
                observed_timestamp=item["t"],
                severity_text=item["lv"],
                severity_number=SeverityNumber(severity_number(item["n"])),
                body=item["body"],
                attributes=item["attrs"],
            )
            batch.append(ReadableLogRecord(log_record=log_record, resource=self.resource, instrumentation_scope=scope))
        result = exporter.export(batch)
        if result is not LogRecordExportResult.SUCCESS:
            raise ConnectionError(f"OTLP export to {self.endpoint or 'the default endpoint'} failed ({result.name})")

    def close_transport(self) -> None:
        if self._exporter is not None:
            exporter, self._exporter = self._exporter, None
            exporter.shutdown()

    def _reset_after_fork(self) -> None:
        if self._pid != os.getpid():
            self._exporter = None  # the parent's channel / session: a child makes its own on first delivery
        super()._reset_after_fork()
