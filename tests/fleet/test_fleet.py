"""The fleet end to end: three ``modelmon serve`` replicas behind HAProxy, one PostgreSQL,
Prometheus finding the replicas by file-based service discovery (each incarnation its own
``pod`` label, as on Kubernetes), the exported recording and alerting rules, Alertmanager.

One test in four acts, each on what the earlier ones left:

1. A rolling restart under load (each replica SIGTERMed and started again in turn): no
   request fails at the client; every answered prediction is stored exactly once with the
   label the client got; Prometheus saw every incarnation, and the counters' fleet totals
   (and each slot's) equal what was answered.
2. Labels for predictions made on replica A, sent to B, to C, and to a replica started after
   A stopped: each joined once; sent again, each a duplicate.
3. Fleet drift (PSI, JS) and quality (accuracy, macro F1, label coverage) from the recording
   rules equal the offline numbers (scipy, scikit-learn, the drift test's hand formulas) on
   the rows the live incarnations served: the rules count a replica's rows for as long as it
   lives (rows of a replaced replica leave the window: an undercount, never a double count,
   as modelmon.rules.drift documents).
4. A replica SIGKILLed under load: HAProxy takes it out and routes around it (no client
   failure: its L7 retries resend what the dead replica never answered), and its journaled
   predictions are stored (adopted by its replacement, which holds the same journal
   directory, as a restarted container keeps its pod's emptyDir).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pandas as pd
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import accuracy_score, f1_score

from modelmon.alerting.config import parse_config
from modelmon.alerting.export import export
from modelmon.alerting.stack import Alertmanager, alertmanager_binary
from modelmon.rules.drift import drift_rule_group, dump_yaml
from modelmon.rules.quality import quality_rule_group
from modelmon.stack.processes import free_port
from modelmon.stack.prometheus import prometheus_binary
from tests.fleet.fleet import DiscoveredPrometheus, HAProxy, Load, Slot, haproxy_binary
from tests.integration.test_fleet_drift import hand_psi, live_slices, offline_counts
from tests.tracking.conftest import POSTGRES_DSN, postgres_schema

pytestmark = pytest.mark.slow

FEATURES = ("amount", "items", "channel", "region")


def stored(schema_url: str) -> dict[str, str]:
    """Every stored prediction: id -> predicted label."""
    schema = schema_url.rsplit("search_path%3D", 1)[1]
    with psycopg.connect(POSTGRES_DSN) as connection:
        rows = connection.execute(f"SELECT id, predicted_label FROM {schema}.predictions").fetchall()
    return {r[0]: r[1] for r in rows}


def stored_labels(schema_url: str) -> dict[str, str]:
    schema = schema_url.rsplit("search_path%3D", 1)[1]
    with psycopg.connect(POSTGRES_DSN) as connection:
        rows = connection.execute(f"SELECT prediction_id, label FROM {schema}.labels").fetchall()
    return {r[0]: r[1] for r in rows}


def wait_stored(schema_url: str, ids: set[str], timeout: float = 30.0) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        rows = stored(schema_url)
        if ids <= rows.keys() or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def predict(url: str, rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    response = httpx.post(f"{url}/v1/models/shop:predict", json={"instances": rows.to_dict("records")}, timeout=30)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    return [p["id"] for p in predictions], [p["label"] for p in predictions]


def send_labels(url: str, ids: list[str], truth: list[str]) -> dict:
    response = httpx.post(f"{url}/v2/models/shop/feedback",
                          json={"labels": [{"id": i, "label": y} for i, y in zip(ids, truth, strict=True)]}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def prefix(prediction_id: str) -> str:
    return prediction_id.rsplit("-", 1)[0]


def replace(slot: Slot, slots: list[Slot], prometheus: DiscoveredPrometheus, haproxy: HAProxy) -> None:
    """Start ``slot`` again (its process is gone) as a new incarnation: out of discovery
    first, so the new process is never scraped under the old pod's label."""
    prometheus.discover([s for s in slots if s is not slot])
    slot.start()
    prometheus.discover(slots)
    haproxy.wait_for(lambda status: status[slot.name] == "UP")


def require_tools() -> None:
    missing = [name for name, found in (("haproxy", haproxy_binary()), ("prometheus", prometheus_binary()),
                                        ("alertmanager", alertmanager_binary())) if found is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (bash scripts/setup.sh test installs them as root)")


# About a minute on an idle 2-core machine; the replicas' starts dominate (8 of them, each a
# few seconds of imports), and on a machine shared with other jobs they take far longer.
@pytest.mark.timeout(900)
def test_fleet_rolling_restart_labels_drift_quality_and_sigkill(registry, registry_dir, shop_frame, shop_model, tmp_path):
    require_tools()
    features = shop_frame.drop(columns="segment")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "modelmon-drift.rules.yml").write_text(dump_yaml({"groups": [drift_rule_group("1h")]}))
    (rules / "modelmon-quality.rules.yml").write_text(dump_yaml({"groups": [quality_rule_group("1h")]}))
    alerting = export(parse_config({}), tmp_path / "alerting")
    assert alerting.alertmanager_config is not None

    with postgres_schema() as store_url:
        args = ("--model", "shop", "--store", store_url, "--drain-seconds", "2", "--drift-score-seconds", "1")
        slots = [Slot(f"r{i}", free_port(), tmp_path / f"home-r{i}", registry_dir, args, tmp_path) for i in range(3)]
        alertmanager = Alertmanager.start(alerting.alertmanager_config, tmp_path / "alertmanager")
        prometheus = haproxy = None
        try:
            with ThreadPoolExecutor(3) as pool:
                list(pool.map(Slot.start, slots))
            prometheus = DiscoveredPrometheus(tmp_path / "prometheus", [*rules.glob("*.rules.yml"), *alerting.rule_files],
                                              f"127.0.0.1:{alertmanager.port}")
            prometheus.discover(slots)
            haproxy = HAProxy(tmp_path / "haproxy", slots)
            prom = prometheus.prometheus

            # -- 1. A rolling restart under load, with labels (act 2) sent in its course --------
            a, b = slots[0], slots[1]
            labelled = shop_frame.iloc[:150]
            ids, predicted = predict(a.url, labelled.drop(columns="segment"))
            truth = labelled["segment"].tolist()
            wait_stored(store_url, set(ids))  # labels join from the store once A has written it
            matched = {}
            started = time.monotonic()
            with Load(haproxy.url, features) as load:
                load.wait_answers(20)
                for slot in slots:
                    assert slot.terminate() == 0, f"{slot.pod} exited uncleanly"
                    # Taken out by its readiness check during the drain, before it closed.
                    assert haproxy.status()[slot.name] != "UP"
                    replace(slot, slots, prometheus, haproxy)
                    load.wait_answers(20)
                    # A's labels: a third to A's successor (started after A stopped, it never
                    # saw the ids), a third each to B and C once they are new too.
                    part = {"r0": slice(0, 50), "r1": slice(50, 100), "r2": slice(100, 150)}[slot.name]
                    matched[slot.pod] = send_labels(slot.url, ids[part], truth[part])["matched"]
            rolling_seconds = time.monotonic() - started
            print(f"fleet: rolling restart {rolling_seconds:.1f} s, {len(load.answers)} requests answered")
            assert load.failures == [], load.failures[:5]
            answered = {i: label for i, label, _ in load.by_id()}
            assert len(answered) == sum(len(a.ids) for a in load.answers), "an id answered twice"
            got = set(answered) | set(ids)  # every prediction id the test was answered
            rows = wait_stored(store_url, set(answered))
            assert {i: v for i, v in rows.items() if i not in ids} == answered, f"stored {len(rows)}, answered {len(answered)}"
            served_by = {s.name: sum(len(a.ids) for a in load.answers if a.replica == s.name) for s in slots}
            assert all(n > 0 for n in served_by.values()), served_by
            assert sum(served_by.values()) == len(answered)

            ended = time.time()
            for slot in slots:
                prometheus.wait_scraped_after(slot, ended)
            # Each incarnation's counters start at 0: the last value of each pod's series is
            # its total, and their sum the fleet's.
            pods = prom.scalar('count(count by (pod) (max_over_time(modelmon_model_info{model="shop"}[1h])))')
            assert pods == 6, "every incarnation's series (3 replicas, each started twice)"
            fleet_rows = prom.scalar('sum(max_over_time(modelmon_predictions_total{model="shop"}[1h]))')
            assert fleet_rows == len(answered) + len(ids)
            fleet_requests = prom.scalar('sum(max_over_time(modelmon_requests_total{model="shop", endpoint="predict", code="200"}[1h]))')
            assert fleet_requests == len(load.answers) + 1
            per_slot = {r["metric"]["slot"]: float(r["value"][1]) for r in prom.query(
                'sum by (slot) (label_replace(max_over_time(modelmon_predictions_total{model="shop"}[1h]),'
                ' "slot", "$1", "pod", "(r[0-9])-.*"))')}
            assert per_slot == {k: float(v) + (len(ids) if k == "r0" else 0) for k, v in served_by.items()}

            # -- 2. The labels: each joined once, wherever it was sent ------------------------
            assert matched == {"r0-2": 50, "r1-2": 50, "r2-2": 50}
            again = send_labels(b.url, ids, truth)
            assert (again["matched"], again["duplicate"], again["unknown"]) == (0, 150, 0)
            assert {i: stored_labels(store_url)[i] for i in ids} == dict(zip(ids, truth, strict=True))

            # -- 3. Fleet drift and quality from the rules vs offline -----------------------
            shifted = live_slices(shop_frame)[2]
            for start in range(0, len(shifted), 25):
                got.update(predict(haproxy.url, shifted.drop(columns="segment").iloc[start : start + 25])[0])
            live = set()
            for slot in slots:  # one row each, to learn each live incarnation's id prefix
                one, _ = predict(slot.url, features.iloc[:1])
                got.update(one)
                live.add(prefix(one[0]))
            counted = [features.iloc[row] for i, _, row in load.by_id() if prefix(i) in live]
            union = pd.concat([pd.DataFrame(counted), shifted.drop(columns="segment"), features.iloc[[0, 0, 0]]])
            expected_rows = float(len(union))
            for feature in FEATURES:
                seen = prom.wait_for(f'model_version_feature:modelmon_feature_bin:increase1h{{model="shop", feature="{feature}"}}', expected_rows)
                assert seen == expected_rows, f"{feature}: window rows {seen}, the live incarnations served {expected_rows}"
            profile = registry.card("shop").reference_profile
            reference = {p.name: np.array(p.shares) for p in (*profile.numeric, *profile.categorical)}
            for feature, counts in offline_counts(profile, union).items():
                psi = prom.scalar(f'model_version_feature:modelmon_feature_bin:psi1h{{model="shop", feature="{feature}"}}')
                js = prom.scalar(f'model_version_feature:modelmon_feature_bin:js1h{{model="shop", feature="{feature}"}}')
                assert psi == pytest.approx(hand_psi(reference[feature], counts), rel=1e-6), feature
                assert js == pytest.approx(jensenshannon(reference[feature], counts / counts.sum(), base=2), rel=1e-6), feature
            assert prom.wait_for('model_version:modelmon_confusion:increase1h{model="shop"}', 150) == 150
            assert prom.scalar('model_version:modelmon_confusion:accuracy1h{model="shop"}') == pytest.approx(accuracy_score(truth, predicted), rel=1e-9)
            assert prom.scalar('modelmon:f1_macro:1h{model="shop"}') == pytest.approx(
                f1_score(truth, predicted, average="macro"), rel=1e-9)
            assert prom.scalar('model_version:modelmon_feedback_matched:ratio_predictions1h{model="shop"}') == pytest.approx(150 / expected_rows, rel=1e-9)
            # The alerting rules loaded and Alertmanager is the one Prometheus sends to.
            groups = httpx.get(f"{prom.url}/api/v1/rules").json()["data"]["groups"]
            # "out of order sample": an evaluation that ran late on a busy machine, a timing
            # artefact; any other error is a rule that cannot evaluate against real series.
            failing = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"]
                       if r["health"] == "err" and "out of order sample" not in r.get("lastError", "")]
            assert failing == [], failing
            assert any(r["type"] == "alerting" for g in groups for r in g["rules"])
            managers = httpx.get(f"{prom.url}/api/v1/alertmanagers").json()["data"]["activeAlertmanagers"]
            assert [m["url"] for m in managers] == [f"http://127.0.0.1:{alertmanager.port}/api/v2/alerts"]

            # -- 4. SIGKILL under load --------------------------------------------------------
            victim = slots[1]
            with Load(haproxy.url, features) as load:
                load.wait_answers(40)
                victim.kill()
                haproxy.wait_for(lambda status: status[victim.name] == "DOWN")
                killed_at = len(load.answers)
                load.wait_answers(20)  # answers finished around the kill, then ...
                routed_from = len(load.answers)
                load.wait_answers(40)  # ... answers while it is down: none from it
                assert {a.replica for a in load.answers[routed_from:]} <= {s.name for s in slots if s is not victim}
                killed = prefix(next(a.ids[0] for a in load.answers[:killed_at] if a.replica == victim.name))
                on_kill = {i for i in stored(store_url) if prefix(i) == killed}
                replace(victim, slots, prometheus, haproxy)
                load.wait_answers(40)
            assert load.failures == [], load.failures[:5]
            answered = {i: label for i, label, _ in load.by_id()}
            rows = wait_stored(store_url, set(answered))
            assert {i: rows.get(i) for i in answered} == answered, "an answered prediction was not stored"
            got |= set(answered)
            killed_answered = {i for i in answered if prefix(i) == killed}
            unanswered = {i for i in rows if prefix(i) == killed} - got
            replayed = sum(s.value for f in text_string_to_metric_families(httpx.get(f"{victim.url}/metrics").text)
                           for s in f.samples if s.name == "modelmon_prediction_log_rows_total" and s.labels["outcome"] == "replayed")
            # What was not in the store at its death, its replacement stored from the journal.
            assert replayed >= len(killed_answered - on_kill)
            print(f"fleet: the SIGKILLed replica answered {len(killed_answered)} predictions, {len(on_kill & killed_answered)} "
                  f"of them in the store at its death; it stored {len(unanswered)} whose answer "
                  f"never reached the client (HAProxy retried those requests elsewhere); its replacement replayed {replayed:.0f} rows")
        finally:
            print("\nfleet: starts " + ", ".join(f"{s.name} {t:.1f}" for s in slots for t in s.start_seconds)
                  + "; SIGTERM to exit " + ", ".join(f"{t:.1f}" for s in slots for t in s.stop_seconds))
            if haproxy is not None:
                haproxy.stop()
            for slot in slots:
                slot.stop()
            if prometheus is not None:
                prometheus.stop()
            alertmanager.stop()
