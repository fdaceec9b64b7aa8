"""The prediction log when the store goes away during traffic: requests keep being served,
rows spool to disk and are replayed when the store returns, and the store ends up holding
exactly one row per prediction served."""

import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelmon.stack.processes import stop_process
from tests.conftest import start_server
from tests.support.postgres import ThrowawayPostgres

pytestmark = pytest.mark.slow


def log_counters(url: str) -> dict[str, float]:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        if family.name == "modelmon_prediction_log_rows":
            return {s.labels["outcome"]: s.value for s in family.samples if s.name.endswith("_total")}
    return {}


@pytest.fixture
def postgres():
    server = ThrowawayPostgres()
    server.start()
    yield server
    server.destroy()


def test_store_outage_during_traffic_loses_nothing(registry_dir, shop_frame, tmp_path, postgres):
    server = start_server(registry_dir, tmp_path, "--store", postgres.url, "--drain-seconds", "0")
    rows = shop_frame.drop(columns="segment").iloc[:5].to_dict("records")
    served, failures = [0], []
    stop_sending = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop_sending.is_set():
                response = client.post(f"{server.url}/v1/models/shop:predict", json={"instances": rows})
                if response.status_code == 200:
                    served[0] += len(response.json()["predictions"])
                else:
                    failures.append(response.status_code)

    sender = threading.Thread(target=traffic)
    try:
        sender.start()
        time.sleep(1.5)
        postgres.stop()  # the store goes away mid-traffic
        time.sleep(3.0)
        during_outage = log_counters(server.url)
        postgres.start()
        time.sleep(1.5)
        stop_sending.set()
        sender.join(30)
        assert failures == [] and served[0] > 0
        assert during_outage["spooled"] > 0  # rows went to disk while the store was down

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and postgres.count("SELECT count(*) FROM predictions") < served[0]:
            time.sleep(0.5)
        counters = log_counters(server.url)
        assert postgres.count("SELECT count(*) FROM predictions") == served[0]
        assert counters["replayed"] > 0 and counters["dropped"] == 0
        assert counters["written"] + counters["replayed"] == served[0]
        assert postgres.count("SELECT count(DISTINCT id) FROM predictions") == served[0]
    finally:
        stop_sending.set()
        stop_process(server.process)
