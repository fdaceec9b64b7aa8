"""The event spool without a server: journal segments (written as the prediction log writes
them) wait while the broker is unreachable, counted as spooled; past the bound the newest are
dropped and counted; when the broker answers, the rest is published in order, each once. The
broker is this machine's Redis, read back with redis-py."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import redis

from modelmon.stack.processes import free_port
from modelmon.streams.events import journal_rows
from modelmon.streams.publisher import EventPublisher, Sender
from modelmon.streams.urls import parse_stream_url
from tests.streams.brokers import ensure_running


def segment(model: str, first: int, n: int) -> bytes:
    """One journal line per model call of 5 rows, in the writer's current format."""
    lines = []
    for start in range(first, first + n, 5):
        labels = ["1", "0", "1", "1", "0"]
        probabilities = [[0.2, 0.8], [0.9, 0.1], [0.3, 0.7], [0.4, 0.6], [0.6, 0.4]]
        lines.append(orjson.dumps([model, 3, 1_700_000_000.25, "abc", start, labels, probabilities, None]))
    return b"\n".join(lines) + b"\n"


def test_spool_is_bounded_counted_and_replayed_in_order(tmp_path):
    ensure_running("redis")
    stream = f"mm-spool-{uuid.uuid4().hex[:8]}"
    events_dir, spool = tmp_path / "events", tmp_path
    events_dir.mkdir()
    sizes = []
    for k in range(5):  # 5 segments of 20 rows, ids abc-0 ... abc-99
        path = events_dir / f"me-{k + 1:09d}.jsonl"
        path.write_bytes(segment("churn", 20 * k, 20))
        sizes.append(path.stat().st_size)
    reports: list[tuple[str, str]] = []

    def report(event: str, value: str) -> None:
        reports.append((event, value))

    def total(event: str) -> int:
        return sum(int(v) for e, v in reports if e == event)

    down = Sender(parse_stream_url(f"redis://127.0.0.1:{free_port()}/0?stream={stream}"))  # nothing listens there
    publisher = EventPublisher(down, events_dir, spool, "me", "/modelmon/test", sum(sizes[:3]), report)
    assert asyncio.run(publisher.publish_pending()) is False
    # The two newest segments do not fit: dropped, 40 events; the three oldest wait: spooled.
    assert (total("dropped"), total("spooled"), total("published")) == (40, 60, 0)
    assert ("connected", "0") in reports
    assert sorted(p.name for p in events_dir.iterdir()) == [f"me-{k:09d}.jsonl" for k in (1, 2, 3)]
    assert asyncio.run(publisher.publish_pending()) is False
    assert total("spooled") == 60  # a segment counts as spooled once, however long it waits

    publisher.sender = Sender(parse_stream_url(f"redis://127.0.0.1:6379/0?stream={stream}"))
    try:
        assert asyncio.run(publisher.publish_pending()) is True
        assert total("published") == 60 and ("connected", "1") in reports
        assert list(events_dir.iterdir()) == []
        entries = redis.Redis(port=6379).xrange(stream)
        events = [orjson.loads(fields[b"data"]) for _, fields in entries]
        assert [e["id"] for e in events] == [f"abc-{i}" for i in range(60)]
        first = events[1]
        assert first["time"] == "2023-11-14T22:13:20.250000Z" and first["subject"] == "churn/3"
        assert first["data"]["output"] == {"label": "0", "probabilities": [0.9, 0.1]}
        assert first["data"]["features"] is None
    finally:
        redis.Redis(port=6379).delete(stream)


def test_every_journal_format_gives_the_same_rows():
    """The writer reads three line formats (docs in prediction_log.py); so do the events."""
    current = orjson.dumps(["m", 2, 5.0, "p", 7, ["a", "b"], [[0.1, 0.9], [0.8, 0.2]], [{"x": 1}, {"x": 2}]])
    per_request = orjson.dumps(["m", 2, 5.0, ["p-7", "p-8"], ["a", "b"], [[0.1, 0.9], [0.8, 0.2]], [{"x": 1}, {"x": 2}]])
    first = orjson.dumps({"m": "m", "v": 2, "t": 5.0, "ids": ["p-7", "p-8"], "y": ["a", "b"], "p": [[0.1, 0.9], [0.8, 0.2]], "f": [{"x": 1}, {"x": 2}]})
    expected = [
        {"id": "p-7", "model": "m", "version": 2, "time": 5.0, "output": {"label": "a", "probabilities": [0.1, 0.9]}, "features": {"x": 1}},
        {"id": "p-8", "model": "m", "version": 2, "time": 5.0, "output": {"label": "b", "probabilities": [0.8, 0.2]}, "features": {"x": 2}},
    ]
    for line in (current, per_request, first):
        assert list(journal_rows(line)) == expected


def test_a_regressors_values_journaled_as_numbers_are_published_as_their_text():
    """Since issue 18 a regressor's finite values are journaled as JSON numbers (not as
    ``repr`` text, made on the event loop): events still carry the text the store holds."""
    values = [21.5, -0.0, 1e16, 1e-05, 0.1 + 0.2]
    numbers = orjson.dumps(["price", 1, 5.0, "p", 1, values, None, None])
    texts = orjson.dumps(["price", 1, 5.0, "p", 1, [repr(v) for v in values], None, None])
    labels = [row["output"]["label"] for row in journal_rows(numbers)]
    assert labels == [row["output"]["label"] for row in journal_rows(texts)]
    assert labels == ["21.5", "-0.0", "1e+16", "1e-05", "0.30000000000000004"]
    assert [float(label) for label in labels] == values


def test_an_adopted_segment_is_linked_once(tmp_path):
    """A server that died after linking a segment for the publisher, before inserting it: the
    next server's writer adopts the segment and inserts it, but does not link it again (its
    link is already waiting, or adopted by the next publisher)."""
    from modelmon.serving.segment_writer import SegmentWriter

    events = tmp_path / "events"
    events.mkdir()
    writer = SegmentWriter(None, tmp_path, "new", 100, 1.0, lambda event, n: None, events)  # type: ignore[arg-type]
    adopted = tmp_path / "new-orphan-old-000000001.jsonl"
    adopted.write_bytes(segment("churn", 0, 5))
    (events / "old-000000001.jsonl").write_bytes(adopted.read_bytes())  # the dead server's link
    writer.link_for_events(adopted)
    assert sorted(p.name for p in events.iterdir()) == ["old-000000001.jsonl"]
    (events / "old-000000001.jsonl").rename(events / "new-0-orphan-old-000000001.jsonl")  # taken by a publisher
    writer._linked.clear()
    writer.link_for_events(adopted)
    assert sorted(p.name for p in events.iterdir()) == ["new-0-orphan-old-000000001.jsonl"]
    fresh = tmp_path / "new-000000002.jsonl"
    fresh.write_bytes(segment("churn", 5, 5))
    writer.link_for_events(fresh)
    assert (events / fresh.name).stat().st_ino == fresh.stat().st_ino  # a hard link, not a copy
