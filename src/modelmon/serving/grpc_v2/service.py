"""The Open Inference Protocol (V2) over gRPC, served beside the HTTP app on its event loop.

One path with REST: the same ``ModelServer`` resolves the model, the same validator checks
the inputs (``tensors.decode_infer_request`` turns the message into REST's request type), the
same batcher, prediction ids, prediction log and monitor run, and every request is counted
in the same series (``endpoint="grpc_infer"`` for ModelInfer; ``metadata`` and ``ready`` for
those RPCs), an error with the HTTP status REST answers for it, so that ``code=~"5.."``
selects server faults of both protocols. The client gets the matching gRPC status, with
REST's message naming the field.

The service table is written here rather than generated (grpcio-tools' ``_pb2_grpc``):
ModelInfer takes its request as bytes, so that a message too large or not decodable is
answered and counted by modelmon instead of refused by gRPC before any handler runs.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from grpc import aio

import modelmon
from modelmon.errors import (
    MalformedRequestError,
    ModelmonError,
    ModelNotReadyError,
    PayloadTooLargeError,
    UnauthorizedError,
)
from modelmon.monitoring.metrics import GRPC_INFER, RequestMetrics
from modelmon.secrets import bearer_matches
from modelmon.serving import codecs
from modelmon.serving.app import PROTECTED_ENDPOINTS, ModelServer, model_metadata
from modelmon.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from modelmon.serving.grpc_v2.tensors import (
    decode_infer_request,
    encode_infer_response,
    metadata_message,
)
from modelmon.serving.rollout import ROW_VERSIONS
from modelmon.serving.runtime import ModelRuntime

SERVICE = "inference.GRPCInferenceService"
#: The gRPC status for each HTTP status a ``ModelmonError`` carries.
STATUS_FOR_HTTP = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
}
#: Seconds in-flight RPCs get to finish when the server stops (uvicorn's, for HTTP).
GRACE_SECONDS = 30.0
logger = logging.getLogger("modelmon.serving")
Response = TypeVar("Response")


class Failed(Exception):
    """An RPC's answer is an error status: raised inside ``_counted``, answered after counting."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class InferenceService:
    """The RPCs, on one ``ModelServer``."""

    def __init__(self, server: ModelServer) -> None:
        self.server = server

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(method: Callable[..., Awaitable[object]], request: Any, response: Any) -> grpc.RpcMethodHandler:
            return grpc.unary_unary_rpc_method_handler(
                method, request_deserializer=request.FromString, response_serializer=response.SerializeToString
            )

        return grpc.method_handlers_generic_handler(SERVICE, {
            "ServerLive": unary(self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": unary(self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelReady": unary(self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            # Bytes in: decoded and size-checked by model_infer itself (see the module's doc).
            "ModelInfer": grpc.unary_unary_rpc_method_handler(
                self.model_infer, response_serializer=pb.ModelInferResponse.SerializeToString
            ),
        })

    # -- server-wide RPCs (not counted, as REST's /v2 and health endpoints) ------------

    async def server_live(self, request: pb.ServerLiveRequest, context: aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context: aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.server.ready)

    async def server_metadata(self, request: pb.ServerMetadataRequest, context: aio.ServicerContext) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="modelmon", version=modelmon.__version__)

    # -- model RPCs, counted -----------------------------------------------------------

    async def model_ready(self, request: pb.ModelReadyRequest, context: aio.ServicerContext) -> pb.ModelReadyResponse:
        async def ready(runtime: ModelRuntime) -> pb.ModelReadyResponse:
            if not self.server.ready:  # counted as REST counts its 503; answered as the protocol says
                runtime.metrics.count_error(ModelNotReadyError.reason)
                raise Answered(pb.ModelReadyResponse(ready=False), 503)
            return pb.ModelReadyResponse(ready=True)

        return await self._counted(context, "ready", request.name, request.version, ready, name_field="name")

    async def model_metadata(self, request: pb.ModelMetadataRequest, context: aio.ServicerContext) -> pb.ModelMetadataResponse:
        async def metadata(runtime: ModelRuntime) -> pb.ModelMetadataResponse:
            return metadata_message(model_metadata(runtime))

        return await self._counted(context, "metadata", request.name, request.version, metadata, name_field="name")

    async def model_infer(self, raw: bytes, context: aio.ServicerContext) -> pb.ModelInferResponse:
        try:
            message = pb.ModelInferRequest.FromString(raw)
        except DecodeError as exc:
            message = None
            failure: ModelmonError | None = MalformedRequestError(f"the request is not a ModelInferRequest message: {exc}")
        else:
            failure = None

        name, version = (message.model_name, message.model_version) if message is not None else ("", "")
        shadow = None
        counted: list[RequestMetrics] = []  # a sticky canary's versions this RPC is counted on (app.COUNTED)
        if message is not None:  # a rollout decides an unversioned request's version, as over REST
            metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
            routed, shadow = self.server.route(name, version or None, metadata)
            version = routed or ""

        async def infer(runtime: ModelRuntime) -> pb.ModelInferResponse:
            assert message is not None
            limit = self.server.settings.max_body_bytes
            if len(raw) > limit:
                raise PayloadTooLargeError(f"request message of {len(raw)} bytes exceeds the limit of {limit}")
            request = decode_infer_request(message)
            codecs.check_requested_outputs(request, runtime.outputs.names)  # before the model runs
            batch = runtime.validator.from_tensors(request.inputs)
            if request.id is None:
                request.id = codecs.new_request_id()
            runtime, prediction, versions = await self.server.answer(runtime, batch, message.model_version or None, counted)
            if shadow is not None and self.server.rollouts is not None:
                self.server.rollouts.mirror(shadow, batch, prediction.output)
            outputs = runtime.outputs.tensors(prediction.output, prediction.ids)
            response = encode_infer_response(runtime.name, runtime.version, request, outputs)
            if versions is not None:  # rows a sticky canary split: each row's version, as over REST
                response.parameters[ROW_VERSIONS].string_param = ",".join(versions)
            return response

        return await self._counted(context, GRPC_INFER, name, version, infer, failure=failure, protected=True, counted=counted)

    async def _counted(
        self,
        context: aio.ServicerContext,
        endpoint: str,
        name: str,
        version: str,
        body: Callable[[ModelRuntime], Awaitable[Response]],
        *,
        name_field: str = "model_name",
        failure: ModelmonError | None = None,
        protected: bool = False,
        counted: list[RequestMetrics] | None = None,
    ) -> Response:
        """Resolve the model, check the token, run ``body``, and count the RPC whatever
        happens, as ``ModelServer.model_endpoint`` does for HTTP. ``failure``: an error found
        before the model was known (the message did not decode)."""
        started = time.perf_counter()
        metrics: RequestMetrics = self.server.metrics.unknown_model
        status = 200
        response: Response | None = None
        error: Failed | None = None
        try:
            if failure is not None:
                raise failure
            if not name:
                raise MalformedRequestError(f"{name_field} is missing: it must name a served model")
            runtime = self.server.runtime(name, version or None)
            metrics = runtime.metrics
            if protected:
                self._authorize(context, endpoint)
            runtime.metrics.inflight.inc()
            try:
                response = await body(runtime)
            finally:
                runtime.metrics.inflight.dec()
        except Answered as answered:
            response, status = answered.response, answered.status
        except ModelmonError as exc:
            for each in counted or (metrics,):
                each.count_error(exc.reason)
            status = exc.status_code
            error = Failed(STATUS_FOR_HTTP.get(status, grpc.StatusCode.INTERNAL), exc.message)
        except Exception as exc:  # a bug of ours: say so, count it, keep serving
            logger.exception("unexpected error in gRPC %s", endpoint)
            for each in counted or (metrics,):
                each.count_error("internal_error")
            status = 500
            error = Failed(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")
        seconds = time.perf_counter() - started
        for each in counted or (metrics,):
            each.observe_request(endpoint, status, seconds)
        if error is not None:
            await context.abort(error.code, error.details)
        assert response is not None
        return response

    def _authorize(self, context: aio.ServicerContext, endpoint: str) -> None:
        """The bearer token in the ``authorization`` metadata, where REST asks for it in the
        header of the same name (inference, with --token-for-inference)."""
        token = self.server.settings.api_token
        if token is None or "infer" not in PROTECTED_ENDPOINTS[self.server.settings.token_for_inference]:
            return
        given = next((value for key, value in context.invocation_metadata() or () if key == "authorization"), "")
        if not isinstance(given, str) or not bearer_matches(given, token.get_secret_value()):
            raise UnauthorizedError("this RPC needs the metadata 'authorization: Bearer <token>' with the server's API token")


class Answered(Exception):
    """A counted answer that is not a 200: ModelReady's ``ready=false`` while not ready."""

    def __init__(self, response: Any, status: int) -> None:
        super().__init__(status)
        self.response = response
        self.status = status


def listen_address(host: str, port: int) -> str:
    """gRPC's spelling of an address: an IPv6 host in brackets (``[::]:8081``), as in a URL."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


#: grpc.aio servers sharing the gRPC port (``SO_REUSEPORT``: the kernel spreads connections
#: over them). A grpc.aio server accepts one RPC at a time (its loop awaits one
#: ``request_call``, then asks for the next), so with one server each RPC reached modelmon
#: alone, in its own event-loop pass, and never batched: 100% of model calls served one
#: request at c=32. With four, RPCs of different connections arrive together and batch
#: (1.7 requests per call at c=32), all on the same event loop and handler. Measured
#: (server CPU per request, h2load, c=32, two alternations): 453-486 µs with one server,
#: 242-354 with four (2 and 8: 291 and 321), requests/s up 35-40%; one connection is served
#: as before.
ACCEPT_LOOPS = 4


class GrpcServer:
    """The gRPC server of one ``ModelServer``, on its event loop (a ``Companion``):
    ``ACCEPT_LOOPS`` grpc.aio servers on one port, with one handler."""

    def __init__(self, model_server: ModelServer, port: int, host: str = "127.0.0.1") -> None:
        self.model_server = model_server
        self.host = host
        self.requested_port = port
        #: The port it listens on, once started (``port=0`` asks for any free one).
        self.port: int | None = None
        self.servers: list[aio.Server] = []

    async def start(self) -> None:
        if self.requested_port:
            # SO_REUSEPORT would share a port another server (of this user) listens on with
            # it: a port already in use is an error instead.
            check_port_free(self.host, self.requested_port)
        limit = self.model_server.settings.max_body_bytes
        handler = InferenceService(self.model_server).handler()
        port = self.requested_port
        try:
            for _ in range(ACCEPT_LOOPS):
                server = aio.server(
                    options=[
                        # Twice the limit: a message up to that size reaches modelmon, which
                        # refuses and counts one over the limit (RESOURCE_EXHAUSTED); gRPC
                        # refuses larger ones itself.
                        ("grpc.max_receive_message_length", 2 * limit),
                        ("grpc.so_reuseport", 1),
                    ]
                )
                server.add_generic_rpc_handlers((handler,))
                address = listen_address(self.host, port)
                try:
                    port = server.add_insecure_port(address)  # port 0: the others join the first's
                except RuntimeError as exc:
                    raise ModelmonError(f"cannot listen for gRPC on {address}: {exc}") from None
                await server.start()
                self.servers.append(server)
        except BaseException:
            await self.stop()
            raise
        self.port = port

    async def stop(self) -> None:
        """New RPCs are refused; in-flight ones get ``GRACE_SECONDS`` to finish."""
        servers, self.servers = self.servers, []
        await asyncio.gather(*(server.stop(GRACE_SECONDS) for server in servers))


def check_port_free(host: str, port: int) -> None:
    """Raise ``ModelmonError`` if something listens on ``host:port`` already: a bind without
    SO_REUSEPORT fails then (with SO_REUSEADDR, as gRPC's own, so that connections of an
    earlier run in TIME_WAIT do not count)."""
    try:
        addresses = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise ModelmonError(
            f"cannot listen for gRPC on {listen_address(host, port)}: {exc}"
        ) from None
    for family, kind, proto, _, sockaddr in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ModelmonError(
                        f"cannot listen for gRPC on {listen_address(host, port)}: the port is in use"
                    ) from None
                # another error (an address family this host lacks): gRPC's bind decides
