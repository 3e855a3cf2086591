"""The fim.v1 FimDaemon gRPC servicer: request validation and error mapping around Daemon.

Every outcome becomes a status code, never an exception escaping into gRPC: invalid input
is INVALID_ARGUMENT (message names the field), a container not on this node is
FAILED_PRECONDITION, a watch beyond a node budget is RESOURCE_EXHAUSTED (message
`NodeCapacity: <budget>: <numbers>`, see budget.py), and a bug is INTERNAL plus an
operational line, so one bad or excess request never disturbs other watches or the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from fim.v1 import fim_pb2, fim_pb2_grpc
from services.fimd.daemon import CapacityError, Daemon, PreconditionError, accept, key_of
from services.fimd.metrics import Metrics
from services.fimd.output import LineWriter
from services.fimd.validation import ValidationError, validate_key

_Response = TypeVar("_Response")


class FimDaemonServicer(fim_pb2_grpc.FimDaemonServicer):
    def __init__(self, daemon: Daemon, writer: LineWriter, metrics: Metrics) -> None:
        self._daemon = daemon
        self._writer = writer
        self._metrics = metrics

    def _call(self, method: str, context: Any, body: Callable[[], _Response]) -> _Response:
        """Runs `body`, mapping exceptions to status codes and counting the outcome."""
        code, detail = grpc.StatusCode.OK, ""
        try:
            return body()
        except ValidationError as err:
            code, detail = grpc.StatusCode.INVALID_ARGUMENT, str(err)
        except PreconditionError as err:
            code, detail = grpc.StatusCode.FAILED_PRECONDITION, str(err)
        except CapacityError as err:
            code, detail = grpc.StatusCode.RESOURCE_EXHAUSTED, str(err)
        except Exception as err:
            code, detail = grpc.StatusCode.INTERNAL, f"internal error: {err!r}"
            self._writer.op("request_failed", "error", method=method, detail=detail)
        finally:
            self._metrics.grpc_requests.labels(method, code.name).inc()
        context.abort(code, detail)
        raise AssertionError("context.abort returns only by raising")

    def CreateWatch(
        self, request: fim_pb2.CreateWatchRequest, context: Any
    ) -> fim_pb2.CreateWatchResponse:
        def body() -> fim_pb2.CreateWatchResponse:
            entry = accept(request, self._daemon.node)
            changed, status = self._daemon.create(entry)
            return fim_pb2.CreateWatchResponse(status=status, changed=changed)

        return self._call("CreateWatch", context, body)

    def DestroyWatch(
        self, request: fim_pb2.DestroyWatchRequest, context: Any
    ) -> fim_pb2.DestroyWatchResponse:
        def body() -> fim_pb2.DestroyWatchResponse:
            validate_key(request.key)
            return fim_pb2.DestroyWatchResponse(existed=self._daemon.destroy(key_of(request.key)))

        return self._call("DestroyWatch", context, body)

    def GetWatchState(
        self, request: fim_pb2.GetWatchStateRequest, context: Any
    ) -> fim_pb2.GetWatchStateResponse:
        return self._call("GetWatchState", context, self._daemon.state)
