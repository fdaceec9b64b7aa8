"""The HTTP application: Open Inference Protocol V2, a records endpoint, and /metrics.

Starlette with plain route functions and no middleware: every model endpoint goes through
``_model_endpoint``, which does the counting that a middleware would, without the cost of
one per request.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import modelmon
from modelmon.config import modelmon_home
from modelmon.errors import (
    FeedbackDisabledError,
    MalformedRequestError,
    ModelmonError,
    ModelNotFoundError,
    ModelNotReadyError,
    RolloutConflictError,
    UnauthorizedError,
)
from modelmon.http import read_limited_body
from modelmon.monitoring.exposition import wants_gzip, wants_openmetrics
from modelmon.monitoring.metrics import QualityMetrics, RequestMetrics, ServerMetrics
from modelmon.registry.profile import load_sample
from modelmon.registry.store import Registry
from modelmon.secrets import bearer_matches
from modelmon.serving import codecs, rollout_commands
from modelmon.serving.feedback import FeedbackJoiner, FeedbackResult, count_matched, parse_feedback
from modelmon.serving.openapi import openapi_document
from modelmon.serving.prediction_log import PredictionLog
from modelmon.serving.recent import RecentPredictions
from modelmon.serving.rollout import ROW_VERSIONS, RolloutController
from modelmon.serving.runtime import PREDICTION_IDS, ModelRuntime, Prediction
from modelmon.serving.settings import ServingSettings
from modelmon.store import open_store
from modelmon.types import FeatureBatch, ModelOutput

JSON = "application/json"
#: Endpoints whose unversioned requests a rollout routes (metadata and feedback are not).
ROUTED_ENDPOINTS = frozenset({"infer", "predict"})
#: The request scope's list of the versions' metrics a request is counted on when a sticky
#: canary's rows decided it (``ModelServer.answer``); absent or empty: the resolved version's.
COUNTED = "modelmon.counted"
#: Endpoints that need the API token, without and with --token-for-inference.
PROTECTED_ENDPOINTS = {
    False: frozenset({"feedback", "repository"}),
    True: frozenset({"feedback", "repository", "infer", "predict"}),
}
logger = logging.getLogger("modelmon.serving")


class Companion(Protocol):
    """A service running beside the server, on its event loop (see ``ModelServer.companions``)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def json_response(content: Any, status_code: int = 200) -> Response:
    return Response(codecs.dumps(content), status_code=status_code, media_type=JSON)


class ModelServer:
    """The models a process serves, and the state behind its endpoints."""

    def __init__(
        self,
        registry: Registry,
        model_refs: list[tuple[str, str]] | None = None,
        settings: ServingSettings | None = None,
    ) -> None:
        self.registry = registry
        self.model_refs = model_refs
        self.settings = settings or ServingSettings()
        self.metrics = ServerMetrics(max_series=self.settings.max_series, grpc=self.settings.grpc_port is not None)
        self.executor = ThreadPoolExecutor(
            self.settings.inference_threads, thread_name_prefix="inference"
        )
        # name -> version -> runtime; "latest" requests go to the highest served version.
        self.runtimes: dict[str, dict[str, ModelRuntime]] = {}
        self.ready = False
        self.recent = RecentPredictions(self.settings.recent_predictions, PREDICTION_IDS.prefix) if self.settings.recent_predictions else None
        self.prediction_log: PredictionLog | None = None
        self.feedback: FeedbackJoiner | None = None
        self._quality: dict[tuple[str, int], tuple[QualityMetrics, list[str]]] = {}
        self._repository_lock = asyncio.Lock()
        #: Other protocols' servers on this event loop (the V2 gRPC server, ``grpc_v2``):
        #: started once the models are loaded, and stopped before the batchers, so that their in-flight
        #: requests finish while the batchers still run.
        self.listeners: list[Companion] = []
        if self.settings.grpc_port is not None:
            # Imported here: grpcio is an optional dependency (the `grpc` extra).
            from modelmon.serving.grpc_v2.service import GrpcServer

            self.listeners.append(GrpcServer(self, self.settings.grpc_port, self.settings.grpc_host))
        #: Started once the models are loaded, stopped after the prediction log: the broker
        #: label consumer and event publisher (modelmon.streams, wired by the CLI).
        self.companions: list[Companion] = []
        #: The rollouts this server follows (docs/rollout.md); None with --no-rollouts.
        self.rollouts: RolloutController | None = None

    def open_rollouts(self) -> None:
        settings = self.settings.rollouts
        if not settings.enabled:
            return
        self.rollouts = RolloutController(
            self, open_store(self.settings.store_url), self.metrics.registry,
            replica=f"{socket.gethostname()}-{PREDICTION_IDS.prefix[:8]}", check_seconds=settings.check_seconds,
            shadow_queue=settings.shadow_queue, shadow_timeout_seconds=settings.shadow_timeout_seconds,
            shadow_linger_seconds=settings.shadow_linger_ms / 1000,
        )

    def open_prediction_log(self) -> None:
        """The store for predictions and labels, migrated, and the log's writer process."""
        log_settings = self.settings.prediction_log
        if not log_settings.enabled:
            return
        store = open_store(self.settings.store_url)
        spool = log_settings.spool_dir or modelmon_home() / "spool"
        self.prediction_log = PredictionLog(store, log_settings, spool, self.metrics.registry)
        self.prediction_log.start()
        self.feedback = FeedbackJoiner(store, self.recent)

    def quality_for(self, model: str, version: int) -> tuple[QualityMetrics, list[str]] | None:
        """Label-side metrics of ``model`` ``version``: the loaded runtime's, or made on
        demand for an older version whose predictions are in the store."""
        runtime = self.runtimes.get(model, {}).get(str(version))
        if runtime is not None and runtime.metrics.quality is not None:
            return runtime.metrics.quality, runtime.class_labels
        key = (model, version)
        if key not in self._quality:
            try:
                card = self.registry.card(model, version)
            except ModelmonError:
                return None
            classes = [str(c) for c in card.signature.class_labels]
            self._quality[key] = (self.metrics.bind_quality(model, str(version), classes), classes)
        return self._quality[key]

    def load(self) -> None:
        self.open_prediction_log()
        refs = self.model_refs or [(name, "latest") for name in self.registry.model_names()]
        for name, version in refs:
            runtime = self.build_runtime(name, version)
            self.runtimes.setdefault(name, {})[runtime.version] = runtime

    def build_runtime(self, name: str, version: str) -> ModelRuntime:
        """Load one registered version (blocking: artifacts, ONNX sessions)."""
        card = self.registry.card(name, version)
        predictor = self.registry.load_predictor(card)
        sample = {}
        if card.reference_profile is not None:
            sample = load_sample(self.registry.version_dir(card.name, card.version), card.reference_profile)
        return ModelRuntime(
            card, predictor, self.metrics, self.executor, self.settings, sample, self.prediction_log, self.recent,
            loss_estimator=self.registry.load_loss_estimator(card),
        )

    async def load_version(self, name: str, version: str) -> tuple[ModelRuntime, bool]:
        """Serve one more version while serving the others; True if it was not loaded yet."""
        async with self._repository_lock:
            number = str(self.registry.resolve_version(name, version))
            loaded = self.runtimes.get(name, {}).get(number)
            if loaded is not None:
                return loaded, False
            runtime = await asyncio.get_running_loop().run_in_executor(None, self.build_runtime, name, number)
            runtime.batcher.start()
            self.runtimes.setdefault(name, {})[runtime.version] = runtime
            return runtime, True

    async def unload_version(self, name: str, version: str | None) -> list[str]:
        """Stop serving one version (or all of a model): new requests get 404 at once,
        queued ones finish, then the version's series leave /metrics."""
        async with self._repository_lock:
            versions = self.runtimes.get(name, {})
            chosen = list(versions) if version is None else [version]
            missing = [v for v in chosen if v not in versions]
            if not versions or missing:
                raise ModelNotFoundError(f"model {name!r} version(s) {missing or chosen} are not served here")
            removed = [versions.pop(v) for v in chosen]
            if not versions:
                del self.runtimes[name]
        for runtime in removed:
            await runtime.batcher.stop()
            self.metrics.unbind(runtime.name, runtime.version)
        return [r.version for r in removed]

    def runtime(self, name: str, version: str | None) -> ModelRuntime:
        versions = self.runtimes.get(name)
        if not versions:
            raise ModelNotFoundError(
                f"model {name!r} is not served here; served models: {sorted(self.runtimes)}"
            )
        if version is None or version == "latest":
            return versions[max(versions, key=int)]
        runtime = versions.get(version)
        if runtime is None:
            raise ModelNotFoundError(
                f"model {name!r} version {version!r} is not served here; served versions: "
                f"{sorted(versions, key=int)}"
            )
        return runtime

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.load)
        for versions in self.runtimes.values():
            for runtime in versions.values():
                runtime.batcher.start()
        self.metrics.drift.start(self.settings.drift.score_seconds)
        await asyncio.get_running_loop().run_in_executor(None, self.open_rollouts)
        if self.rollouts is not None:
            await self.rollouts.start()  # the plans in force before the first request
        # The ~200k objects of the imported libraries and loaded models never die; left to
        # the collector, each full collection scans them all and stalls the event loop for
        # 100+ ms (the serving benchmark's p99). Frozen, they are skipped.
        gc.collect()
        gc.freeze()
        for listener in self.listeners:
            await listener.start()
        for companion in self.companions:
            await companion.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        if self.rollouts is not None:
            await self.rollouts.stop()
        self.metrics.drift.stop()
        for listener in self.listeners:
            await listener.stop()
        for versions in self.runtimes.values():
            for runtime in versions.values():
                await runtime.batcher.stop()
        self.executor.shutdown(wait=True)
        if self.prediction_log is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.prediction_log.stop)
        for companion in self.companions:
            await companion.stop()

    # -- request plumbing -------------------------------------------------------------

    async def read_body(self, request: Request) -> bytes:
        return await read_limited_body(request, self.settings.max_body_bytes)

    def authorize(self, request: Request, endpoint: str) -> None:
        """Write endpoints, and inference when configured, need the bearer token. Compared
        in constant time; the token never reaches a log or an error message."""
        token = self.settings.api_token
        if token is None or endpoint not in PROTECTED_ENDPOINTS[self.settings.token_for_inference]:
            return
        if not bearer_matches(request.headers.get("authorization", ""), token.get_secret_value()):
            raise UnauthorizedError("this endpoint needs the header 'Authorization: Bearer <token>' with the server's API token")

    async def model_endpoint(
        self,
        request: Request,
        endpoint: str,
        handler: Callable[[Request, ModelRuntime], Awaitable[Response]],
    ) -> Response:
        """Resolve the model, run ``handler``, and count the request whatever happens."""
        started = time.perf_counter()
        params = request.path_params
        metrics: RequestMetrics = self.metrics.unknown_model
        try:
            name, version = params["name"], params.get("version")
            if endpoint in ROUTED_ENDPOINTS:
                version, request.scope["modelmon.shadow"] = self.route(name, version, request.headers)
            runtime = self.runtime(name, version)
            metrics = runtime.metrics
            self.authorize(request, endpoint)
            metrics.inflight.inc()
            try:
                response = await handler(request, runtime)
            finally:
                metrics.inflight.dec()
        except ModelmonError as exc:
            for counted in request.scope.get(COUNTED) or (metrics,):
                counted.count_error(exc.reason)
            response = json_response({"error": exc.message}, exc.status_code)
            if exc.status_code == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
        except Exception as exc:  # a bug of ours: say so, count it, keep serving
            logger.exception("unexpected error on %s %s", request.method, request.url.path)
            for counted in request.scope.get(COUNTED) or (metrics,):
                counted.count_error("internal_error")
            response = json_response({"error": f"internal error: {type(exc).__name__}"}, 500)
        seconds = time.perf_counter() - started
        for counted in request.scope.get(COUNTED) or (metrics,):
            counted.observe_request(endpoint, response.status_code, seconds)
        return response

    # -- endpoint bodies --------------------------------------------------------------

    async def infer(self, request: Request, runtime: ModelRuntime) -> Response:
        body = await self.read_body(request)
        infer_request = codecs.decode_infer_request(body, request.headers.get(codecs.HEADER_LENGTH))
        codecs.check_requested_outputs(infer_request, runtime.outputs.names)  # before the model runs
        batch = runtime.validator.from_tensors(infer_request.inputs)
        if infer_request.id is None:
            infer_request.id = codecs.new_request_id()
        runtime, prediction, versions = await self.answer(
            runtime, batch, request.path_params.get("version"), request.scope.setdefault(COUNTED, [])
        )
        self.mirror(request, batch, prediction.output)
        outputs = runtime.outputs.tensors(prediction.output, prediction.ids)
        content, header_length = codecs.encode_infer_response(
            runtime.name, runtime.version, infer_request, outputs,
            None if versions is None else {ROW_VERSIONS: ",".join(versions)},
        )
        if header_length is None:
            return Response(content, media_type=JSON)
        return Response(
            content,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(header_length)},
        )

    async def predict_records(self, request: Request, runtime: ModelRuntime) -> Response:
        payload = codecs.loads(await self.read_body(request))
        if not isinstance(payload, dict) or "instances" not in payload:
            raise MalformedRequestError('expected {"instances": [{"feature": value, ...}, ...]}')
        batch = runtime.validator.from_records(payload["instances"])
        runtime, prediction, versions = await self.answer(
            runtime, batch, request.path_params.get("version"), request.scope.setdefault(COUNTED, [])
        )
        self.mirror(request, batch, prediction.output)
        predictions = runtime.outputs.records(prediction.output, prediction.ids)
        if versions is not None:  # a split sticky canary: each row says its version
            for record, version in zip(predictions, versions, strict=True):
                record["model_version"] = version
        return json_response({"model_name": runtime.name, "model_version": runtime.version, "predictions": predictions})

    async def repository(self, request: Request) -> Response:
        """V2 model repository extension: load and unload registered versions at run time.
        Admin operations: token-protected when a token is set, not counted per model."""
        action, name = request.path_params["action"], request.path_params["name"]
        try:
            self.authorize(request, "repository")
            body = await self.read_body(request)
            payload = codecs.loads_or_empty(body)
            parameters = payload.get("parameters", {}) if isinstance(payload, dict) else None
            if not isinstance(parameters, dict):
                raise MalformedRequestError('expected {"parameters": {"version": "<n>"}} or an empty body')
            version = parameters.get("version")
            if version is not None and not isinstance(version, (str, int)):
                raise MalformedRequestError("parameters.version must be a version number")
            version = None if version is None else str(version)
            if action == "load":
                runtime, loaded = await self.load_version(name, version or "latest")
                return json_response({"name": name, "version": runtime.version, "loaded": loaded})
            unloaded = await self.unload_version(name, version)
            return json_response({"name": name, "unloaded": unloaded})
        except ModelmonError as exc:
            response = json_response({"error": exc.message}, exc.status_code)
            if exc.status_code == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
            return response

    def route(self, name: str, version: str | None, headers: Mapping[str, str]) -> tuple[str | None, ModelRuntime | None]:
        """The version that answers an inference request (the model's rollout decides for
        an unversioned one, docs/rollout.md), and the shadow candidate to copy it to, if any.
        The one routing of REST and gRPC."""
        if (version is not None and version != "latest") or self.rollouts is None:
            return version, None
        routed = self.rollouts.route(name, headers)
        if routed is None:
            return version, None
        return routed, self.rollouts.shadow_target(name, routed)

    async def answer(
        self, runtime: ModelRuntime, batch: FeatureBatch, requested: str | None, counted: list[RequestMetrics]
    ) -> tuple[ModelRuntime, Prediction, list[str] | None]:
        """The routed version's prediction of a validated request. A canary sticky by a
        feature (docs/rollout.md) decides here, row by row, what ``route`` could not before
        the body was decoded: it returns the version that answered (the primary when the
        rows were split) and, for a split, each row's version; ``counted`` gets the metrics
        the request is counted on when not ``runtime``'s. The one path of REST and gRPC."""
        sticky = self.rollouts.sticky(runtime, requested) if self.rollouts is not None else None
        if sticky is None:
            return runtime, await runtime.predict(batch), None
        return await sticky.predict(batch, counted)

    def mirror(self, request: Request, batch: FeatureBatch, answered: ModelOutput) -> None:
        """A copy of an answered request's rows to a shadow candidate, if one is chosen,
        with the primary's answer to compare the candidate's with."""
        shadow = request.scope.get("modelmon.shadow")
        if shadow is not None and self.rollouts is not None:
            self.rollouts.mirror(shadow, batch, answered)

    async def rollout(self, request: Request) -> Response:
        """The model's rollout: GET its status; POST start, promote or abort (admin
        operations beside the repository's, token-protected the same way). A bad request
        changes nothing and is counted (modelmon_rollout_commands_total)."""
        name, action = request.path_params["name"], request.path_params.get("action", "status")
        try:
            if action not in ("status", "start", *rollout_commands.OPERATOR_ACTIONS):
                raise ModelNotFoundError(f"unknown rollout action {action!r}: use start, promote or abort")
            if action != "status":
                self.authorize(request, "repository")
            if self.rollouts is None:
                raise RolloutConflictError("this server does not follow rollouts (serve without --no-rollouts)")
            store = self.rollouts.store
            if action == "status":
                found = await run_in_threadpool(rollout_commands.status, store, name)
                if found is None:
                    raise ModelNotFoundError(f"model {name!r} has no rollout")
                response = json_response({**found, "evidence": self.rollouts.local_evidence(name)})
            else:
                body = await self.read_body(request)
                payload = codecs.loads_or_empty(body)
                if action == "start":
                    started = await run_in_threadpool(rollout_commands.start, store, self.registry, name, payload, "http")
                    response = json_response(started.as_dict())
                else:
                    if payload != {}:
                        raise MalformedRequestError(f"{action} takes no parameters: send an empty body")
                    moved = await run_in_threadpool(rollout_commands.act, store, name, action, "http")
                    response = json_response(moved.as_dict())
                await self.rollouts.check()  # follow it here at once, not at the next check
        except ModelmonError as exc:
            response = json_response({"error": exc.message}, exc.status_code)
            if exc.status_code == 401:
                response.headers["WWW-Authenticate"] = "Bearer"
        if self.rollouts is not None:
            self.rollouts.count(self.rollouts.commands, action if action in ("status", "start", "promote", "abort") else "unknown", str(response.status_code))
        return response

    async def repository_index(self, request: Request) -> Response:
        served = {(n, v) for n, versions in self.runtimes.items() for v in versions}
        index = [
            {"name": name, "version": str(v), "state": "READY" if (name, str(v)) in served else "UNAVAILABLE"}
            for name in self.registry.model_names()
            for v in self.registry.versions(name)
        ]
        return json_response(index)

    async def receive_feedback(self, request: Request, runtime: ModelRuntime) -> Response:
        if self.feedback is None:
            raise FeedbackDisabledError("labels need the prediction log; serve without --no-prediction-log")
        pairs = parse_feedback(codecs.loads(await self.read_body(request)), runtime.class_labels)
        result = await self.record_labels(runtime, pairs)
        return json_response(result.as_response())

    async def record_labels(self, runtime: ModelRuntime, pairs: list[tuple[str, str]]) -> FeedbackResult:
        """Join ``pairs`` to their predictions, commit them and count them: the one path of
        labels over HTTP and from a broker (modelmon.streams). Raises StoreUnavailableError
        when the store did not answer (nothing was recorded)."""
        if self.feedback is None:
            raise FeedbackDisabledError("labels need the prediction log; serve without --no-prediction-log")
        known = self.feedback.lookup_recent(runtime.name, [prediction_id for prediction_id, _ in pairs])
        result, matched = await run_in_threadpool(self.feedback.record, runtime.name, pairs, known)
        count_matched(matched, self.quality_for, runtime.name)
        quality = runtime.metrics.quality
        if quality is not None:
            quality.feedback["duplicate"].inc(len(result.duplicate))
            quality.feedback["unknown_id"].inc(len(result.unknown))
        return result

    async def metadata(self, request: Request, runtime: ModelRuntime) -> Response:
        return json_response(model_metadata(runtime))

    async def model_ready(self, request: Request, runtime: ModelRuntime) -> Response:
        if not self.ready:
            raise ModelNotReadyError("the server is not ready")
        return json_response({"name": runtime.name, "ready": True})


def model_metadata(runtime: ModelRuntime) -> dict[str, Any]:
    """V2 model metadata: one input per feature, as a client should send them."""
    signature = runtime.card.signature
    v2_types = {"float64": "FP64", "float32": "FP32", "int64": "INT64", "int32": "INT32",
                "bool": "BOOL", "string": "BYTES"}
    inputs = [
        {"name": f.name, "datatype": v2_types[f.dtype], "shape": [-1],
         "parameters": {"nullable": f.nullable, **({"categories": f.categories} if f.categories else {})}}
        for f in signature.features
    ]
    return {
        "name": runtime.name,
        "versions": [runtime.version],
        "platform": f"modelmon-{runtime.card.runtime}",
        "inputs": inputs,
        "outputs": runtime.outputs.metadata(),
    }


def create_app(server: ModelServer) -> InferenceFastPath:
    async def server_metadata(request: Request) -> Response:
        return json_response({"name": "modelmon", "version": modelmon.__version__,
                              "extensions": ["binary_tensor_data"]})

    async def live(request: Request) -> Response:
        return json_response({"live": True})

    async def ready(request: Request) -> Response:
        return json_response({"ready": server.ready}, 200 if server.ready else 503)

    async def models_index(request: Request) -> Response:
        return json_response(
            {"models": [{"name": n, "versions": sorted(v, key=int)} for n, v in server.runtimes.items()]}
        )

    async def repository_action(request: Request) -> Response:
        if request.path_params["action"] not in ("load", "unload"):
            return json_response({"error": f"unknown repository action {request.path_params['action']!r}: use load or unload"}, 404)
        return await server.repository(request)

    async def openapi(request: Request) -> Response:
        served = {name: sorted(versions, key=int) for name, versions in server.runtimes.items()}
        document = openapi_document(
            server.settings.token_for_inference, server.settings.api_token is not None, served,
            server.registry.model_names(),
        )
        return json_response(document)

    async def metrics(request: Request) -> Response:
        # The queued monitoring work is counted here, on the event loop, where it is counted
        # every 0.1 s anyway; the exposition is written in a worker thread, which gives the
        # GIL back every 0.5 ms and writes only what changed since the last scrape.
        openmetrics = wants_openmetrics(request.headers.get("accept"))
        gzip = wants_gzip(request.headers.get("accept-encoding"))
        server.metrics.flush(settle=False)
        body, content_type = await run_in_threadpool(server.metrics.scrape, openmetrics, gzip)
        headers = {"Vary": "Accept, Accept-Encoding"}
        if gzip:
            headers["Content-Encoding"] = "gzip"
        return Response(body, headers=headers, media_type=content_type)

    def model_route(path: str, endpoint: str, handler: Any, methods: list[str]) -> list[Route]:
        async def route(request: Request) -> Response:
            return await server.model_endpoint(request, endpoint, handler)

        return [
            Route(f"/v2/models/{{name}}{path}", route, methods=methods),
            Route(f"/v2/models/{{name}}/versions/{{version}}{path}", route, methods=methods),
        ]

    async def predict(request: Request) -> Response:
        return await server.model_endpoint(request, "predict", server.predict_records)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        response = json_response({"error": f"{request.method} {request.url.path}: {getattr(exc, 'detail', 'not found')}"}, status)
        # A 405 names the methods the path takes (RFC 9110), as Starlette's own answer does.
        response.headers.update(getattr(exc, "headers", None) or {})
        return response

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    routes = [
        *model_route("/infer", "infer", server.infer, ["POST"]),
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2/models", models_index),
        *model_route("", "metadata", server.metadata, ["GET"]),
        *model_route("/ready", "ready", server.model_ready, ["GET"]),
        *model_route("/feedback", "feedback", server.receive_feedback, ["POST"]),
        Route("/v1/models/{name}:predict", predict, methods=["POST"]),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi),
        Route("/v2/repository/index", server.repository_index, methods=["POST", "GET"]),
        Route("/v2/repository/models/{name}/rollout", server.rollout, methods=["GET"]),
        Route("/v2/repository/models/{name}/rollout/{action:str}", server.rollout, methods=["POST"]),
        Route("/v2/repository/models/{name}/{action:str}", repository_action, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_found},
    )
    return InferenceFastPath(server, app)


class InferenceFastPath:
    """Sends ``POST /v2/models/{name}[/versions/{version}]/infer`` straight to the endpoint,
    everything else to the Starlette app.

    Why: at saturation, Starlette's router (a regex per route until one matches) and its
    middleware stack took about a fifth of the event loop's time per inference request in
    the serving benchmark. The endpoint needs none of it: ``ModelServer.model_endpoint``
    catches and counts every error itself. Same paths and answers as the Starlette route.
    """

    PREFIX = "/v2/models/"
    SUFFIX = "/infer"

    def __init__(self, server: ModelServer, app: Starlette) -> None:
        self.server = server
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        params = self.match(scope)
        if params is None:
            await self.app(scope, receive, send)
            return
        scope["path_params"] = params
        request = Request(scope, receive)
        response = await self.server.model_endpoint(request, "infer", self.server.infer)
        await response(scope, receive, send)

    @classmethod
    def match(cls, scope: dict[str, Any]) -> dict[str, str] | None:
        """The path parameters of an inference request; None for any other request."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        if not (path.startswith(cls.PREFIX) and path.endswith(cls.SUFFIX)):
            return None
        parts = path[len(cls.PREFIX) : -len(cls.SUFFIX)].split("/")
        if len(parts) == 1 and parts[0]:
            return {"name": parts[0]}
        if len(parts) == 3 and parts[1] == "versions" and parts[0] and parts[2]:
            return {"name": parts[0], "version": parts[2]}
        return None
