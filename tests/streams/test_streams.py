"""Labels from a broker and prediction events to one, against the real RabbitMQ, NATS
JetStream and Redis of this machine, with independent clients (aio-pika, nats-py, redis-py)
on the other side. One test per broker, with one server:

1. every prediction arrives as a CloudEvent, in order, each once, with the response's label;
2. labels published by the independent client are joined exactly once: duplicates, an
   unknown id and two malformed messages (parked in ``<name>.dead``) included; the store
   holds exactly the labels sent;
3. the broker is stopped under prediction traffic and started again: the server answers
   every request, the events wait on disk (counted), then all arrive in order, none twice;
   the label consumer works again;
4. a standalone ``modelmon consume labels`` is killed between receiving a message and
   committing it (the store is locked; the broker says the message is delivered and not
   acknowledged): a new consumer gets it again and the label is committed once.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelmon.stack.processes import free_port, stop_process, wait_for_http
from tests.conftest import start_server
from tests.streams.brokers import (
    Outage,
    delivered_unacknowledged,
    ensure_running,
    forget,
    publish,
    read,
    url,
    wait_until,
)

pytestmark = pytest.mark.slow


def metric(base: str, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def predict(base: str, rows) -> tuple[list[str], list[str]]:
    response = httpx.post(f"{base}/v1/models/cancer:predict", json={"instances": rows.to_dict("records")})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    return [p["id"] for p in predictions], [str(p["label"]) for p in predictions]


def check_events(bodies: list[bytes], ids: list[str], predicted: list[str]) -> None:
    events = [orjson.loads(b) for b in bodies]
    assert [e["id"] for e in events] == ids  # all, in order, none twice
    for event, label in zip(events, predicted, strict=True):
        assert event["specversion"] == "1.0" and event["type"] == "io.modelmon.prediction.v1"
        assert event["source"].startswith("/modelmon/") and event["datacontenttype"] == "application/json"
        assert event["time"].endswith("Z") and event["time"] == event["data"]["time"]
        data = event["data"]
        assert (data["id"], data["model"], data["version"]) == (event["id"], "cancer", 1)
        assert data["output"]["label"] == label and len(data["output"]["probabilities"]) == 2


def labels_in_store(store: Path) -> dict[str, str]:
    with sqlite3.connect(store) as connection:
        return dict(connection.execute("SELECT prediction_id, label FROM labels").fetchall())


@pytest.mark.parametrize("kind", ["rabbit", "nats", "redis"])
def test_labels_and_events_through_a_broker(kind, registry_dir, cancer_frame, tmp_path):
    ensure_running(kind)
    tag = uuid.uuid4().hex[:8]
    labels_name, events_name, fleet_name = f"mm-labels-{tag}", f"mm-events-{tag}", f"mm-fleet-{tag}"
    store = tmp_path / "store.db"
    features, truth = cancer_frame.drop(columns="target"), [str(t) for t in cancer_frame["target"]]
    server = start_server(
        registry_dir, tmp_path, "--store", str(store), "--drain-seconds", "0", "--model", "cancer",
        "--labels-from", url(kind, labels_name, model="cancer"), "--publish-predictions", url(kind, events_name),
        home=tmp_path / "home",
    )
    consumer = None
    try:
        base = server.url
        wait_until(lambda: metric(base, "modelmon_stream_connected", role="labels") == 1, 60, "the label consumer")
        for outcome in ("committed", "malformed", "retried"):  # every series from zero
            assert metric(base, "modelmon_stream_messages_total", broker=kind, outcome=outcome) == 0

        # 1. Prediction events.
        ids, predicted = [], []
        for start in range(0, 200, 25):
            batch_ids, batch_labels = predict(base, features.iloc[start : start + 25])
            ids += batch_ids
            predicted += batch_labels
        wait_until(lambda: metric(base, "modelmon_stream_events_total", outcome="published") == 200, 60, "200 events published")
        received = read(kind, events_name)
        check_events(received, ids, predicted)

        # 2. Labels, through the same join as POST .../feedback.
        def labelled(i: int) -> dict:
            return {"id": ids[i], "label": int(truth[i])}

        not_a_class = orjson.dumps({"id": ids[12], "label": 7})
        publish(kind, labels_name, [
            orjson.dumps([labelled(i) for i in range(10)]),  # 10 matched
            orjson.dumps([labelled(i) for i in (0, 1, 2, 10, 11)]),  # 3 duplicates, 2 matched
            orjson.dumps({"id": "no-such-prediction", "label": 1}),  # an unknown id
            b"not json{",  # malformed
            not_a_class,  # malformed: 7 is not a class of the model
        ])
        wait_until(lambda: metric(base, "modelmon_stream_messages_total", outcome="committed") == 3
                   and metric(base, "modelmon_stream_messages_total", outcome="malformed") == 2, 60, "5 label messages")
        assert {o: metric(base, "modelmon_stream_labels_total", outcome=o) for o in ("matched", "duplicate", "unknown_id")} == \
            {"matched": 12, "duplicate": 3, "unknown_id": 1}
        # The server's own feedback series count them as they count labels over HTTP.
        assert metric(base, "modelmon_feedback_total", model="cancer", outcome="matched") == 12
        assert metric(base, "modelmon_feedback_total", model="cancer", outcome="duplicate") == 3
        assert labels_in_store(store) == {ids[i]: truth[i] for i in range(12)}
        assert sorted(read(kind, f"{labels_name}.dead", durable="dead-reader")) == sorted([b"not json{", not_a_class])

        # 3. The broker stops under prediction traffic and comes back.
        outage = Outage(kind)
        outage.stop()
        try:
            for start in range(200, 300, 25):
                batch_ids, batch_labels = predict(base, features.iloc[start : start + 25])
                ids += batch_ids
                predicted += batch_labels
            wait_until(lambda: metric(base, "modelmon_stream_events_total", outcome="spooled") > 0, 60, "events spooled")
            assert metric(base, "modelmon_stream_connected", role="events") == 0
        finally:
            outage.start()
        wait_until(lambda: metric(base, "modelmon_stream_events_total", outcome="published") == 300, 120, "300 events published")
        assert metric(base, "modelmon_stream_events_total", outcome="dropped") == 0
        assert metric(base, "modelmon_stream_connected", role="events") == 1
        received += read(kind, events_name)
        check_events(received, ids, predicted)
        publish(kind, labels_name, [orjson.dumps(labelled(250))])
        wait_until(lambda: metric(base, "modelmon_stream_labels_total", outcome="matched") == 13, 120, "a label after the outage")

        # 4. A standalone consumer killed between receiving a message and committing it.
        lock = sqlite3.connect(store, isolation_level=None, timeout=60)
        lock.execute("BEGIN EXCLUSIVE")  # the consumer's commit waits for the store
        fleet_url = url(kind, fleet_name, model="cancer", redeliver_seconds="1")
        consumer, consumer_port = start_consumer(fleet_url, registry_dir, store, tmp_path / "consumer-1.log")
        publish(kind, fleet_name, [orjson.dumps(labelled(260))])
        wait_until(lambda: delivered_unacknowledged(kind, fleet_name) == 1, 60, "the message delivered, not acknowledged")
        consumer.send_signal(signal.SIGKILL)
        consumer.wait()
        lock.execute("ROLLBACK")
        lock.close()
        assert ids[260] not in labels_in_store(store)
        consumer, consumer_port = start_consumer(fleet_url, registry_dir, store, tmp_path / "consumer-2.log")
        consumer_metrics = f"http://127.0.0.1:{consumer_port}"
        wait_until(lambda: metric(consumer_metrics, "modelmon_stream_labels_total", outcome="matched") == 1, 60, "the label delivered again")
        publish(kind, fleet_name, [orjson.dumps(labelled(260))])  # sent twice by its producer: a duplicate
        wait_until(lambda: metric(consumer_metrics, "modelmon_stream_labels_total", outcome="duplicate") == 1, 60, "the duplicate")
        assert metric(consumer_metrics, "modelmon_stream_labels_total", outcome="matched") == 1
        assert labels_in_store(store) == {ids[i]: truth[i] for i in [*range(12), 250, 260]}
    finally:
        if consumer is not None:
            stop_process(consumer)
        stop_process(server.process)
        forget(kind, [labels_name, events_name, fleet_name])


def start_consumer(fleet_url: str, registry_dir: Path, store: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "modelmon.cli", "consume", "labels", "--from", fleet_url, "--registry", str(registry_dir),
         "--store", str(store), "--metrics-port", str(port)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    wait_for_http(f"http://127.0.0.1:{port}/metrics", timeout=60, process=process)
    wait_until(lambda: metric(f"http://127.0.0.1:{port}", "modelmon_stream_connected", role="labels") == 1, 60, "the consumer")
    return process, port
