"""The V2 gRPC protocol of a live ``modelmon serve --grpc-port``: tritonclient's gRPC client
unchanged (health, metadata, raw tensor contents), typed contents, every kind of bad input as
a gRPC status naming the problem and counted, tokens and the size limit, and the same
predictions, prediction log and monitoring counts as REST for the same rows.

One server for the module, with a token required for inference (every call here carries it
but the ones testing it) and a small size limit."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import grpc
import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as triton
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from modelmon.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from modelmon.stack.processes import free_port, stop_process
from tests.conftest import start_server
from tests.integration.prom_helpers import promtool_check_metrics
from tests.integration.test_http_api import error_counts, metric_value, typed_registry

pytestmark = pytest.mark.slow
TOKEN = "grpc-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_BYTES = 64 * 1024
SHOP_COLUMNS = (("amount", "FP64"), ("items", "INT64"), ("channel", "BYTES"), ("region", "BYTES"))


@pytest.fixture(scope="module")
def served(registry_dir, tmp_path_factory):
    """(server, gRPC port) for the module."""
    directory = tmp_path_factory.mktemp("grpc")
    (directory / "token").write_text(TOKEN)
    grpc_port = free_port()
    handle = start_server(
        registry_dir, directory, "--grpc-port", str(grpc_port), "--drain-seconds", "0",
        "--api-token-file", str(directory / "token"), "--token-for-inference", "--max-body-bytes", str(MAX_BYTES),
    )
    yield handle, grpc_port
    stop_process(handle.process)
    # gRPC stopped cleanly too. (The exit status is SIGTERM's: with --drain-seconds 0 uvicorn
    # raises the signal again once it has shut down.)
    assert "Traceback" not in handle.log.read_text(), handle.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def client(served):
    with triton.InferenceServerClient(url=f"127.0.0.1:{served[1]}") as with_client:
        yield with_client


@pytest.fixture(scope="module")
def model_infer(served):
    """ModelInfer with this module's messages: typed contents, and bytes that are no message."""
    with grpc.insecure_channel(f"127.0.0.1:{served[1]}") as channel:
        yield channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda m: m if isinstance(m, bytes) else m.SerializeToString(),
            response_deserializer=pb.ModelInferResponse.FromString,
        )


def shop_tensors(rows) -> list[triton.InferInput]:
    tensors = []
    for name, datatype in SHOP_COLUMNS:
        values = rows[name].to_numpy(dtype=object if datatype == "BYTES" else None)
        tensor = triton.InferInput(name, [len(values)], datatype)
        tensor.set_data_from_numpy(values)
        tensors.append(tensor)
    return tensors


def test_grpc_series_exist_from_zero(served):
    """Before any gRPC traffic: the grpc_infer series of every status a served version can
    answer, and the unknown model's, at zero, so that increase() sees the first error; the
    exposition stays valid (promtool)."""
    server, _ = served
    exposition = httpx.get(f"{server.url}/metrics").text
    requests = {(s.labels["model"], s.labels["endpoint"], s.labels["code"]): s.value
                for f in text_string_to_metric_families(exposition) for s in f.samples if s.name == "modelmon_requests_total"}
    wanted = {(m, "grpc_infer", c) for m in ("cancer", "shop") for c in ("200", "400", "401", "413", "500")}
    wanted |= {("_unknown_", "grpc_infer", "404"), ("_unknown_", "grpc_infer", "400")}
    assert {k: requests.get(k) for k in wanted} == dict.fromkeys(wanted, 0.0)
    assert error_counts(server.url, "_unknown_") == {"model_not_found": 0.0, "malformed_request": 0.0}
    checked = promtool_check_metrics(exposition.encode())
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("shop") and client.is_model_ready("cancer", "1")
    assert client.get_server_metadata().name == "modelmon"
    metadata = client.get_model_metadata("cancer")
    assert metadata.name == "cancer" and list(metadata.versions) == ["1"]
    assert len(metadata.inputs) == 30 and {i.datatype for i in metadata.inputs} == {"FP64"}
    assert [(o.name, o.datatype, list(o.shape)) for o in metadata.outputs] == [
        ("label", "INT64", [-1]), ("probabilities", "FP64", [-1, 2]), ("prediction_id", "BYTES", [-1])]
    shop = client.get_model_metadata("shop")
    assert {i.name: i.datatype for i in shop.inputs} == {"amount": "FP64", "items": "INT64", "channel": "BYTES", "region": "BYTES"}


def test_fp64_matrix_in_raw_contents(client, cancer_model, cancer_frame):
    frame = cancer_frame.drop(columns="target").iloc[:16]
    tensor = triton.InferInput("input-0", [16, 30], "FP64")
    tensor.set_data_from_numpy(frame.to_numpy(dtype=np.float64))
    result = client.infer("cancer", [tensor], request_id="req-1", headers=AUTH)
    assert result.get_response().id == "req-1"
    np.testing.assert_array_equal(result.as_numpy("label"), cancer_model.predict(frame))
    # The model is served as ONNX (float32 arithmetic), agreeing with scikit-learn within 1e-4.
    np.testing.assert_allclose(result.as_numpy("probabilities"), cancer_model.predict_proba(frame), atol=1e-5)
    ids = result.as_numpy("prediction_id")
    assert ids.shape == (16,) and len(set(ids)) == 16


def test_bytes_columns_and_requested_outputs(client, shop_model, shop_frame):
    rows = shop_frame.iloc[:10]
    outputs = [triton.InferRequestedOutput("label")]
    result = client.infer("shop", shop_tensors(rows), outputs=outputs, headers=AUTH)
    assert [o.name for o in result.get_response().outputs] == ["label"]
    assert [v.decode() for v in result.as_numpy("label")] == list(shop_model.predict(rows.drop(columns="segment")))
    assert result.get_response().id  # generated when the request has none


def test_typed_contents_give_the_same_answers_as_raw(model_infer, client, shop_model, shop_frame, cancer_model, cancer_frame):
    rows = shop_frame.iloc[:7]
    request = pb.ModelInferRequest(model_name="shop", model_version="1")
    for name, datatype in SHOP_COLUMNS:
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[7, 1])
        if datatype == "FP64":
            tensor.contents.fp64_contents.extend(rows[name].tolist())
        elif datatype == "INT64":
            tensor.contents.int64_contents.extend(rows[name].tolist())
        else:
            tensor.contents.bytes_contents.extend(v.encode() for v in rows[name])
    typed = model_infer(request, metadata=tuple(AUTH.items()))
    by_name = {o.name: (o, raw) for o, raw in zip(typed.outputs, typed.raw_output_contents, strict=True)}
    output, raw = by_name["probabilities"]
    assert output.datatype == "FP64" and list(output.shape) == [7, 3]
    expected = shop_model.predict_proba(rows.drop(columns="segment"))
    np.testing.assert_allclose(np.frombuffer(raw, dtype="<f8").reshape(7, 3), expected, atol=1e-5)
    from_raw = client.infer("shop", shop_tensors(rows), headers=AUTH)
    np.testing.assert_array_equal(from_raw.as_numpy("probabilities"), np.frombuffer(raw, dtype="<f8").reshape(7, 3))
    # FP32 contents for the matrix: the model gets the float32 values, as from REST.
    frame = cancer_frame.drop(columns="target").iloc[:3]
    matrix = pb.ModelInferRequest(model_name="cancer")
    matrix.inputs.add(name="x", datatype="FP32", shape=[3, 30]).contents.fp32_contents.extend(frame.to_numpy(np.float32).ravel().tolist())
    answer = model_infer(matrix, metadata=tuple(AUTH.items()))
    labels = np.frombuffer(answer.raw_output_contents[0], dtype="<i8")
    np.testing.assert_array_equal(labels, cancer_model.predict(frame.astype(np.float32)))


def bad(message: pb.ModelInferRequest | None = None, **fields) -> pb.ModelInferRequest:
    """A one-row shop request, changed by ``fields`` (name -> (datatype, shape, contents) or None to drop)."""
    columns = {"amount": ("FP64", [1], [10.0]), "items": ("INT64", [1], [2]), "channel": ("BYTES", [1], [b"web"]),
               "region": ("BYTES", [1], [b"north"])}
    columns.update(fields)
    request = message or pb.ModelInferRequest(model_name="shop")
    for name, spec in columns.items():
        if spec is None:
            continue
        datatype, shape, values = spec
        field = {"FP64": "fp64_contents", "INT64": "int64_contents", "BYTES": "bytes_contents", "BOOL": "bool_contents"}[datatype]
        getattr(request.inputs.add(name=name, datatype=datatype, shape=shape).contents, field).extend(values)
    return request


BAD_INPUTS = [
    # (request, gRPC status, model counted, reason, words in the message)
    (bad(amount=("FP64", [1], [10.0, 11.0])), "INVALID_ARGUMENT", "shop", "wrong_shape", "'amount': shape [1] needs 1 values, got 2"),
    (bad(amount=("FP64", [2], [10.0, 11.0])), "INVALID_ARGUMENT", "shop", "wrong_shape", "feature 'items' has 1 rows but 'amount' has 2"),
    (bad(amount=("FP64", [1, 2], [10.0, 11.0])), "INVALID_ARGUMENT", "shop", "wrong_shape", "feature 'amount' has shape [1, 2]"),
    (bad(channel=("FP64", [1], [1.0])), "INVALID_ARGUMENT", "shop", "wrong_datatype", "feature 'channel' is categorical: send it as BYTES"),
    (bad(amount=("BYTES", [1], [b"10"])), "INVALID_ARGUMENT", "shop", "wrong_datatype", "feature 'amount' is numeric"),
    (bad(region=None), "INVALID_ARGUMENT", "shop", "missing_feature", "missing feature(s) ['region']"),
    (bad(colour=("BYTES", [1], [b"red"])), "INVALID_ARGUMENT", "shop", "unknown_feature", "unknown feature 'colour'"),
    (bad(pb.ModelInferRequest(model_name="nope")), "NOT_FOUND", "_unknown_", "model_not_found", "model 'nope' is not served here"),
    (bad(pb.ModelInferRequest(model_name="shop", model_version="7")), "NOT_FOUND", "_unknown_", "model_not_found", "version '7' is not served"),
    (bad(pb.ModelInferRequest()), "INVALID_ARGUMENT", "_unknown_", "malformed_request", "model_name is missing"),
    (pb.ModelInferRequest(model_name="shop"), "INVALID_ARGUMENT", "shop", "malformed_request", "inputs is empty"),
    (bad(pb.ModelInferRequest(model_name="shop", raw_input_contents=[b"\0" * 8])), "INVALID_ARGUMENT", "shop", "malformed_request",
     "raw_input_contents has 1 entries for 4 inputs"),
    (pb.ModelInferRequest(model_name="shop", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="amount", datatype="FP64", shape=[1], contents=pb.InferTensorContents(fp32_contents=[1.0]))]),
     "INVALID_ARGUMENT", "shop", "wrong_datatype", "inputs[0].contents.fp32_contents: input 'amount' is FP64, whose values go in contents.fp64_contents"),
    (bad(amount=("FP64", [1], [float("inf")])), "INVALID_ARGUMENT", "shop", "invalid_value", "feature 'amount': infinite value at row 0"),
    (bad(channel=("BYTES", [1], [b"\xff"])), "INVALID_ARGUMENT", "shop", "invalid_value", "BYTES element 0 is not UTF-8"),
    # User report 5 and 7: the REST path's validator, so the same refusals.
    (bad(items=("FP64", [1], [1e30])), "INVALID_ARGUMENT", "shop", "invalid_value", "feature 'items': value 1e+30 at row 0 is out of range for int64"),
    (bad(items=("FP64", [1], [12.5])), "INVALID_ARGUMENT", "shop", "invalid_value", "feature 'items': value 12.5 at row 0 is not an integer (int64)"),
    (bad(amount=("BOOL", [1], [True])), "INVALID_ARGUMENT", "shop", "wrong_datatype",
     "feature 'amount' is numeric (float64): send it as FP32, FP64 or an integer type, not BOOL"),
    (pb.ModelInferRequest(model_name="shop", inputs=[pb.ModelInferRequest.InferInputTensor(name="amount", datatype="FP65", shape=[1])]),
     "INVALID_ARGUMENT", "shop", "wrong_datatype", "unknown datatype 'FP65'"),
    (b"\x0a\xff\xff", "INVALID_ARGUMENT", "_unknown_", "malformed_request", "not a ModelInferRequest message"),
]


def test_bad_inputs_are_a_named_status_and_counted(served, model_infer):
    server, _ = served
    before = {model: error_counts(server.url, model) for model in ("shop", "_unknown_")}
    expected: Counter[tuple[str, str]] = Counter()
    for request, status, model, reason, words in BAD_INPUTS:
        with pytest.raises(grpc.RpcError) as caught:
            model_infer(request, metadata=tuple(AUTH.items()))
        assert caught.value.code().name == status, (words, caught.value.details())
        assert words in caught.value.details(), caught.value.details()
        expected[(model, reason)] += 1
    after = {model: error_counts(server.url, model) for model in ("shop", "_unknown_")}
    counted = Counter({(m, r): after[m][r] - before[m].get(r, 0) for m in after for r in after[m] if after[m][r] != before[m].get(r, 0)})
    assert counted == expected
    # Each answered with the HTTP status REST gives the same error, under endpoint grpc_infer.
    assert metric_value(server.url, "modelmon_requests_total", model="shop", endpoint="grpc_infer", code="400") == sum(
        n for (m, _), n in expected.items() if m == "shop")


@pytest.fixture(scope="module")
def typed_served(tmp_path_factory):
    """(server, gRPC port, model) serving ``typed``: a float32 feature ``x`` and a bool ``flag``."""
    root = tmp_path_factory.mktemp("typed-registry")
    model = typed_registry(root)
    grpc_port = free_port()
    handle = start_server(root, tmp_path_factory.mktemp("typed-grpc"), "--grpc-port", str(grpc_port), "--drain-seconds", "0")
    yield handle, grpc_port, model
    stop_process(handle.process)


def typed_request(x: tuple[str, list], flag: tuple[str, list]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="typed")
    for name, (datatype, values) in (("x", x), ("flag", flag)):
        field = {"FP32": "fp32_contents", "FP64": "fp64_contents", "BOOL": "bool_contents"}[datatype]
        getattr(request.inputs.add(name=name, datatype=datatype, shape=[len(values)]).contents, field).extend(values)
    return request


def test_values_a_float32_or_bool_feature_cannot_hold_are_invalid_argument(typed_served):
    """The REST path's checks: a float32 feature beyond float32, a bool feature given 7 or 0.5."""
    server, grpc_port, model = typed_served
    before = error_counts(server.url, "typed")
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=pb.ModelInferResponse.FromString)
        for request, text in (
            (typed_request(("FP64", [0.5, 1e300]), ("BOOL", [True, False])), "feature 'x': value 1e+300 at row 1 is out of range for float32"),
            (typed_request(("FP64", [-1e39]), ("BOOL", [True])), "feature 'x': value -1e+39 at row 0 is out of range for float32"),
            (typed_request(("FP32", [0.5, 1.0]), ("FP64", [1.0, 7.0])),
             "feature 'flag': value 7 at row 1 is not true or false (a bool feature takes true/false, or 0 and 1)"),
            (typed_request(("FP32", [0.5]), ("FP64", [0.5])),
             "feature 'flag': value 0.5 at row 0 is not true or false (a bool feature takes true/false, or 0 and 1)"),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                infer(request)
            assert (caught.value.code().name, caught.value.details()) == ("INVALID_ARGUMENT", text)
        # In range, true/false or 0/1: the model's answers.
        expected = model.predict(pd.DataFrame({"x": [0.5, -2.0], "flag": [True, False]}))
        for flag in (("BOOL", [True, False]), ("FP64", [1.0, 0.0])):
            answer = infer(typed_request(("FP32", [0.5, -2.0]), flag))
            assert answer.outputs[0].name == "prediction"
            np.testing.assert_allclose(np.frombuffer(answer.raw_output_contents[0], dtype="<f8"), expected, rtol=1e-5)
    after = error_counts(server.url, "typed")
    assert after["invalid_value"] == before["invalid_value"] + 4 and after["internal_error"] == before["internal_error"]


def test_tritonclient_sees_the_status_and_message(client):
    tensor = triton.InferInput("amount", [1], "FP64")
    tensor.set_data_from_numpy(np.array([1.0]))
    with pytest.raises(InferenceServerException, match=r"missing feature\(s\)") as caught:
        client.infer("shop", [tensor], headers=AUTH)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("nope")
    assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_token_and_size_limit(served, client, model_infer, shop_frame, cancer_frame):
    server, _ = served
    before = error_counts(server.url, "shop")
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        with pytest.raises(InferenceServerException) as caught:
            client.infer("shop", shop_tensors(shop_frame.iloc[:1]), headers=headers)
        assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
        assert "authorization: Bearer <token>" in caught.value.message() and TOKEN not in caught.value.message()
    assert client.get_model_metadata("shop", headers={}).name == "shop"  # metadata needs no token
    # Over --max-body-bytes (and under twice it, where gRPC itself refuses): counted.
    rows = 3000  # 26 bytes a row: about 78 kB
    big = pb.ModelInferRequest(model_name="shop")
    for name, datatype in SHOP_COLUMNS:
        big.inputs.add(name=name, datatype=datatype, shape=[rows])
    big.raw_input_contents.extend([np.zeros(rows).tobytes(), np.zeros(rows, np.int64).tobytes(),
                                   b"\x01\x00\x00\x00a" * rows, b"\x01\x00\x00\x00b" * rows])
    assert MAX_BYTES < big.ByteSize() < 2 * MAX_BYTES
    with pytest.raises(grpc.RpcError) as caught:
        model_infer(big, metadata=tuple(AUTH.items()))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"exceeds the limit of {MAX_BYTES}" in caught.value.details()
    after = error_counts(server.url, "shop")
    assert after["unauthorized"] - before["unauthorized"] == 3
    assert after["body_too_large"] - before["body_too_large"] == 1


def test_same_rows_same_answers_and_counts_as_rest(served, client, shop_model, shop_frame):
    """The same 40 rows through REST then gRPC, one row per request: the same predictions,
    and each pass adds the same prediction counts (which scikit-learn's own predictions give)
    and batch sizes; gRPC's prediction ids take labels through the prediction log."""
    server, _ = served
    rows = shop_frame.iloc[100:140]
    expected = Counter(shop_model.predict(rows.drop(columns="segment")))

    def class_counts() -> dict[str, float]:
        return {c: metric_value(server.url, "modelmon_predictions_total", model="shop", **{"class": c})
                for c in ("bronze", "gold", "silver")}

    def rows_predicted() -> float:
        return metric_value(server.url, "modelmon_batch_size_sum", model="shop")

    start, start_rows = class_counts(), rows_predicted()
    rest_labels, rest_proba = [], []
    with httpx.Client(headers=AUTH) as http:
        for i in range(len(rows)):
            row = rows.iloc[i]
            body = {"inputs": [{"name": n, "shape": [1], "datatype": d, "data": [row[n].item() if d != "BYTES" else row[n]]}
                               for n, d in SHOP_COLUMNS]}
            outputs = http.post(f"{server.url}/v2/models/shop/infer", json=body).raise_for_status().json()["outputs"]
            by_name = {o["name"]: o["data"] for o in outputs}
            rest_labels += by_name["label"]
            rest_proba.append(by_name["probabilities"])
    middle, middle_rows = class_counts(), rows_predicted()
    grpc_labels, grpc_proba, grpc_ids = [], [], []
    for i in range(len(rows)):
        result = client.infer("shop", shop_tensors(rows.iloc[i : i + 1]), headers=AUTH)
        grpc_labels += [v.decode() for v in result.as_numpy("label")]
        grpc_proba.append(result.as_numpy("probabilities").ravel())
        grpc_ids += [v.decode() for v in result.as_numpy("prediction_id")]
    end, end_rows = class_counts(), rows_predicted()

    assert grpc_labels == rest_labels == list(shop_model.predict(rows.drop(columns="segment")))
    np.testing.assert_allclose(np.array(grpc_proba), np.array(rest_proba), rtol=1e-12, atol=0)
    rest_counts = {c: middle[c] - start[c] for c in start}
    grpc_counts = {c: end[c] - middle[c] for c in start}
    assert grpc_counts == rest_counts == {c: float(expected.get(c, 0)) for c in start}
    assert end_rows - middle_rows == middle_rows - start_rows == len(rows)
    assert metric_value(server.url, "modelmon_requests_total", model="shop", endpoint="grpc_infer", code="200") >= len(rows)
    # Labels for gRPC's predictions join through the prediction log, as REST's do.
    labels = [{"id": pid, "label": label} for pid, label in zip(grpc_ids[:5], rows.segment[:5], strict=True)]
    answer = httpx.post(f"{server.url}/v2/models/shop/feedback", json={"labels": labels}, headers=AUTH).raise_for_status().json()
    assert answer["matched"] == 5, answer


def test_many_connections_at_once_each_get_their_own_rows(served, cancer_model, cancer_frame):
    """Concurrent RPCs on separate connections (spread over the server's accept loops, and
    batched together when they meet): every answer holds its own rows' predictions, every
    prediction id is new, and the rows predicted grow by exactly the rows sent."""
    from concurrent.futures import ThreadPoolExecutor

    from modelmon.serving.codecs import decode_binary

    server, grpc_port = served
    frame = cancer_frame.drop(columns="target").iloc[:96]
    starts = np.cumsum([0] + [1, 2, 3] * 16)  # 48 requests of 1, 2 or 3 rows
    chunks = [frame.iloc[a:b] for a, b in pairwise(starts)]
    before = metric_value(server.url, "modelmon_batch_size_sum", model="cancer")

    def ask(rows):
        # Its own channel: a connection of its own (options unlike the others' keep gRPC
        # from sharing one subchannel between them).
        options = [("grpc.primary_user_agent", f"test-{id(rows)}")]
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}", options=options) as channel:
            call = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            request = pb.ModelInferRequest(model_name="cancer")
            request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
            request.raw_input_contents.append(rows.to_numpy(dtype="<f8").tobytes())
            return call(request, metadata=tuple(AUTH.items()), timeout=30)

    with ThreadPoolExecutor(len(chunks)) as pool:
        answers = list(pool.map(ask, chunks))
    ids = []
    for rows, answer in zip(chunks, answers, strict=True):
        raw = dict(zip([o.name for o in answer.outputs], answer.raw_output_contents, strict=True))
        label = np.frombuffer(raw["label"], dtype="<i8")
        proba = np.frombuffer(raw["probabilities"], dtype="<f8").reshape(-1, 2)
        np.testing.assert_array_equal(label, cancer_model.predict(rows))
        np.testing.assert_allclose(proba, cancer_model.predict_proba(rows), atol=1e-5)
        ids += list(decode_binary(raw["prediction_id"], "BYTES", "prediction_id"))
    assert len(ids) == len(set(ids)) == len(frame)
    after = metric_value(server.url, "modelmon_batch_size_sum", model="cancer")
    assert after - before == len(frame)


def test_a_port_in_use_is_an_error(served):
    """The accept loops share their port (SO_REUSEPORT) with each other only: a port another
    server listens on, or any socket is bound to, is refused, not shared."""
    import asyncio
    import socket
    from types import SimpleNamespace

    from modelmon.errors import ModelmonError
    from modelmon.serving.grpc_v2.service import ACCEPT_LOOPS, GrpcServer

    stand_in = SimpleNamespace(settings=SimpleNamespace(max_body_bytes=MAX_BYTES))

    async def start_and_stop(port: int) -> tuple[int | None, int]:
        grpc_server = GrpcServer(stand_in, port)  # type: ignore[arg-type]
        await grpc_server.start()
        try:
            return grpc_server.port, len(grpc_server.servers)
        finally:
            await grpc_server.stop()

    with pytest.raises(ModelmonError, match="in use"):
        asyncio.run(start_and_stop(served[1]))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ModelmonError, match="in use"):
            asyncio.run(start_and_stop(taken.getsockname()[1]))
    # A free port works: all the accept loops on that one port.
    port, loops = asyncio.run(start_and_stop(0))
    assert port and loops == ACCEPT_LOOPS > 1
