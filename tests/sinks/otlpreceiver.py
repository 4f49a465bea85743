"""A loopback OTLP logs receiver for tests and benchmarks: HTTP ``/v1/logs`` or gRPC, decoded with opentelemetry-proto.

It can be stopped and started again on the same port (an outage), and records what it received as plain dicts.
"""

from __future__ import annotations

import socket
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


def decode(request: ExportLogsServiceRequest) -> list[dict[str, Any]]:
    out = []
    for rl in request.resource_logs:
        resource = {kv.key: _value(kv.value) for kv in rl.resource.attributes}
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                out.append(
                    {
                        "resource": resource,
                        "scope": sl.scope.name,
                        "body": _value(lr.body),
                        "severity_text": lr.severity_text,
                        "severity_number": lr.severity_number,
                        "time_unix_nano": lr.time_unix_nano,
                        "attrs": {kv.key: _value(kv.value) for kv in lr.attributes},
                    }
                )
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for requests in flight: a stop never half-answers one
    block_on_close = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that died mid-request (a killed worker) is not the receiver's error: no traceback."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class Receiver:
    """``protocol`` "http" or "grpc"; ``endpoint`` is what an exporter is configured with."""

    def __init__(self, protocol: str = "http", port: int | None = None) -> None:
        self.protocol = protocol
        self.records: list[dict[str, Any]] = []
        self.requests = 0
        self._lock = threading.Lock()
        if port is None:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
        self.port = port
        self._http: _Server | None = None
        self._grpc: Any = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        if self.protocol == "grpc":
            return f"http://127.0.0.1:{self.port}"
        return f"http://127.0.0.1:{self.port}/v1/logs"

    def _accept(self, request: ExportLogsServiceRequest) -> None:
        decoded = decode(request)
        with self._lock:
            self.records.extend(decoded)
            self.requests += 1

    def count(self, needle: str) -> int:
        with self._lock:
            return sum(1 for r in self.records if needle in str(r["body"]))

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.records)

    def start(self) -> None:
        if self.protocol == "grpc":
            self._start_grpc()
        else:
            self._start_http()

    def _start_http(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/logs":
                    self.send_error(404)
                    return
                receiver._accept(ExportLogsServiceRequest.FromString(body))
                payload = ExportLogsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = _Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def _start_grpc(self) -> None:
        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

        receiver = self

        class Servicer(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: ExportLogsServiceRequest, context: Any) -> ExportLogsServiceResponse:
                receiver._accept(request)
                return ExportLogsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Servicer(), server)
        server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._grpc = server

    def stop(self) -> None:
        """Answer what is in flight, then refuse connections until :meth:`start`."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=5).wait(30)
            self._grpc = None
