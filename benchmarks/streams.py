"""How fast does the event publisher drain its spool into each broker? The real publisher
(``modelmon.streams.publisher.EventPublisher``) on journal segments written in the prediction
log's format (500 rows each, two classes, no features), into this machine's RabbitMQ (one
persistent message per event, each confirmed before the next), NATS JetStream (one
acknowledged publish per event, with a ``Nats-Msg-Id``) and Redis (XADD in MULTI/EXEC
pipelines of 500). Events per second of wall time, from the first publish to the last
confirmation; every event is then read back with the broker's own client and counted.

    .venv/bin/python benchmarks/streams.py [--quick] [--out benchmarks/results/streams.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parents[1]))

from tests.streams.brokers import PORTS, forget, listening, read, url

from modelmon.streams.publisher import EventPublisher, Sender
from modelmon.streams.urls import parse_stream_url

ROWS_PER_SEGMENT = 500


def write_segments(directory: Path, events: int) -> None:
    for k, first in enumerate(range(0, events, ROWS_PER_SEGMENT)):
        n = min(ROWS_PER_SEGMENT, events - first)
        lines = [orjson.dumps(["churn", 1, time.time(), "bench", first + i, ["1"], [[0.3, 0.7]], None]) for i in range(n)]
        (directory / f"bench-{k + 1:09d}.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def run(kind: str, events: int) -> dict:
    name = f"mm-bench-{uuid.uuid4().hex[:8]}"
    published = 0

    def report(event: str, value: str) -> None:
        nonlocal published
        if event == "published":
            published += int(value)

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        write_segments(directory, events)
        publisher = EventPublisher(Sender(parse_stream_url(url(kind, name))), directory, directory, "bench", "/bench", 1 << 40, report)
        try:
            started = time.perf_counter()
            assert asyncio.run(publisher.publish_pending()), f"{kind}: the broker refused"
            seconds = time.perf_counter() - started
            bodies = read(kind, name, durable="bench")
            received = len(bodies)
            in_order = [orjson.loads(b)["id"] for b in bodies] == [f"bench-{i}" for i in range(events)]
        finally:
            forget(kind, [name])
    return {"broker": kind, "events": events, "published": published, "received": received, "in_order_once": in_order,
            "seconds": round(seconds, 3), "events_per_second": round(events / seconds)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 events per broker (the smoke test)")
    parser.add_argument("--events", type=int, default=5_000, help="events per broker")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "streams.json")
    args = parser.parse_args()
    events = 500 if args.quick else args.events
    results = []
    print("| broker | events | seconds | events/s |\n|---|---|---|---|")
    for kind in ("rabbit", "nats", "redis"):
        if not listening(PORTS[kind]):
            print(f"| {kind} | not running | | |")
            continue
        result = run(kind, events)
        results.append(result)
        print(f"| {kind} | {result['events']} | {result['seconds']} | {result['events_per_second']} |")
    args.out.write_text(json.dumps({"rows_per_segment": ROWS_PER_SEGMENT, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
