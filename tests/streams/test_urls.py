"""Broker URLs, and the one thing that can be checked of the Kafka path without a Kafka: the
FastStream subscriber it declares is accepted (no broker runs here: docs/streams.md)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from modelmon.errors import ModelmonError
from modelmon.streams.labels import LabelConsumer, MalformedMessage, label_items
from modelmon.streams.metrics import StreamMetrics
from modelmon.streams.urls import parse_stream_url


def test_urls_name_the_broker_destination_and_options():
    target = parse_stream_url("amqp://guest:secret@10.0.0.5:5672/prod?queue=labels&model=churn&id=pid")
    assert (target.kind, target.server, target.name, target.group, target.dead_letter) == (
        "rabbit", "amqp://guest:secret@10.0.0.5:5672/prod", "labels", "modelmon", "labels.dead")
    assert target.describe() == "rabbit://10.0.0.5:5672/labels"  # no password in logs
    assert parse_stream_url("nats://h:4222?subject=churn.labels").jetstream == "CHURN_LABELS"
    assert parse_stream_url("kafka://b1:9092,b2:9092?topic=t&group=g").server == "b1:9092,b2:9092"
    for bad, message in [("http://h?queue=q", "scheme"), ("redis://h/0", r"\?stream=NAME"), ("amqp://h/?queue=q&x=1", "unknown option")]:
        with pytest.raises(ModelmonError, match=message):
            parse_stream_url(bad)


def test_label_messages_map_to_items():
    target = parse_stream_url("redis://h/0?stream=s&path=event.labels&id=prediction&label=outcome&model=churn")
    body = b'{"event": {"labels": [{"prediction": "a-1", "outcome": 1}, {"prediction": "a-2", "outcome": 0, "model": "other"}]}}'
    assert label_items(body, target) == {"churn": [{"id": "a-1", "label": 1}], "other": [{"id": "a-2", "label": 0}]}
    for body, reason in [(b"{", "not JSON"), (b'{"event": {}}', "no 'event.labels'"), (b'{"event": {"labels": [{"prediction": "a"}]}}', "item 0")]:
        with pytest.raises(MalformedMessage, match=reason):
            label_items(body, target)
    with pytest.raises(MalformedMessage, match="names no model"):
        label_items(b'{"id": "a", "label": 1}', parse_stream_url("redis://h/0?stream=s"))


def test_the_kafka_subscriber_is_declared_without_a_broker():
    target = parse_stream_url("kafka://127.0.0.1:9?topic=labels&model=churn")
    consumer = LabelConsumer(target, lambda m, i: [], None, StreamMetrics(CollectorRegistry()).label_side("kafka"))  # type: ignore[arg-type]
    from modelmon.streams.urls import make_broker

    consumer.broker = make_broker(target)
    consumer._subscribe()  # FastStream checks the subscriber's options here; nothing connects
    assert len(consumer.broker.subscribers) == 1
