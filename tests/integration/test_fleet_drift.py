"""Fleet-wide drift: three replicas, one Prometheus, the exported recording rules.

The rules' PSI and Jensen-Shannon per feature must equal the values computed offline on the
union of the rows the three replicas served, and each replica's own in-process scores must
equal the offline values on its own slice.
"""

import math
import subprocess
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy.spatial.distance import jensenshannon

from modelmon.registry.profile import OTHER
from modelmon.rules.drift import drift_rules, dump_yaml
from modelmon.stack.processes import stop_process
from modelmon.stack.prometheus import Prometheus
from tests.conftest import start_server

pytestmark = pytest.mark.slow
EPS = 1e-4


def hand_psi(reference_shares, counts):
    p = (np.asarray(reference_shares) + EPS) / (1 + EPS * len(counts))
    q = (counts / counts.sum() + EPS) / (1 + EPS * len(counts))
    return float(np.sum((q - p) * np.log(q / p)))


def offline_counts(profile, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Bin counts of ``frame`` computed independently of the server's accounting."""
    counts = {}
    for p in profile.numeric:
        edges = np.concatenate([[-np.inf], p.edges, [np.inf]])
        counts[p.name] = np.histogram(frame[p.name].to_numpy(float), edges)[0].astype(float)
    for p in profile.categorical:
        values = frame[p.name].where(frame[p.name].isin(p.categories), OTHER)
        counts[p.name] = np.array([(values == label).sum() for label in p.bin_labels], float)
    return counts


def live_slices(frame: pd.DataFrame) -> list[pd.DataFrame]:
    rng = np.random.default_rng(5)
    shifted = frame.iloc[400:].copy()
    shifted["amount"] = shifted["amount"] * 1.6
    shifted["channel"] = rng.choice(["app", "store", "kiosk"], len(shifted))
    return [frame.iloc[:150], frame.iloc[150:400], shifted]


def send(url: str, rows: pd.DataFrame) -> None:
    features = rows.drop(columns="segment")
    for start in range(0, len(features), 25):
        chunk = features.iloc[start : start + 25]
        response = httpx.post(f"{url}/v1/models/shop:predict", json={"instances": chunk.to_dict("records")})
        assert response.status_code == 200, response.text


def server_scores(url: str) -> dict[tuple[str, str], float]:
    scores = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name == "modelmon_feature_drift" and s.labels["model"] == "shop":
                scores[(s.labels["feature"], s.labels["method"])] = s.value
    return scores


def wait_for_window(url: str, rows: int, timeout: float = 10.0) -> None:
    """Scores are refreshed in the background: wait until they cover every row sent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
            for s in family.samples:
                if s.name == "modelmon_drift_window_rows" and s.labels["model"] == "shop" and s.value == rows:
                    return
        time.sleep(0.1)
    raise AssertionError(f"{url}: drift window never reached {rows} rows")


def test_three_replicas_fleet_psi_and_js_equal_offline_union(registry, registry_dir, shop_frame, tmp_path):
    profile = registry.card("shop").reference_profile
    servers = [
        start_server(registry_dir, tmp_path, "--model", "shop", "--drain-seconds", "0", "--drift-score-seconds", "0.2")
        for _ in range(3)
    ]
    rule_file = tmp_path / "drift.rules.yml"
    rule_file.write_text(dump_yaml(drift_rules("1h")))
    assert subprocess.run(["promtool", "check", "rules", str(rule_file)], capture_output=True).returncode == 0
    prometheus = Prometheus.start(tmp_path / "prom", [f"127.0.0.1:{s.port}" for s in servers], rule_files=[rule_file])
    try:
        assert prometheus.wait_for('count(up{job="modelmon"} == 1)', 3) == 3
        slices = live_slices(shop_frame)
        for server, rows in zip(servers, slices, strict=True):
            send(server.url, rows)
        union = pd.concat(slices)
        expected_rows = float(len(union))
        for feature in ("amount", "items", "channel", "region"):
            seen = prometheus.wait_for(f'model_version_feature:modelmon_feature_bin:increase1h{{model="shop", feature="{feature}"}}', expected_rows)
            assert seen == expected_rows, f"{feature}: recorded window rows {seen}, sent {expected_rows}"

        union_counts = offline_counts(profile, union)
        reference = {p.name: np.array(p.shares) for p in (*profile.numeric, *profile.categorical)}
        for feature, counts in union_counts.items():
            psi = prometheus.scalar(f'model_version_feature:modelmon_feature_bin:psi1h{{model="shop", feature="{feature}"}}')
            js = prometheus.scalar(f'model_version_feature:modelmon_feature_bin:js1h{{model="shop", feature="{feature}"}}')
            assert psi == pytest.approx(hand_psi(reference[feature], counts), rel=1e-6), feature
            assert js == pytest.approx(jensenshannon(reference[feature], counts / counts.sum(), base=2), rel=1e-6), feature

        # Each replica's own scores equal the offline ones on its slice.
        for server, rows in zip(servers, slices, strict=True):
            wait_for_window(server.url, len(rows))
            scores = server_scores(server.url)
            for feature, counts in offline_counts(profile, rows).items():
                assert scores[(feature, "psi")] == pytest.approx(hand_psi(reference[feature], counts), rel=1e-9)
                expected_js = jensenshannon(reference[feature], counts / counts.sum(), base=2)
                assert scores[(feature, "js")] == pytest.approx(expected_js, rel=1e-9, abs=1e-12)
            assert not math.isnan(scores[("amount", "wasserstein")])
        # The shift planted in the third slice is flagged there, and only there.
        shifted = server_scores(servers[2].url)
        assert shifted[("amount", "psi")] > 0.2 and shifted[("channel", "psi")] > 0.2
        assert server_scores(servers[0].url)[("amount", "psi")] < 0.2
    finally:
        prometheus.stop()
        for server in servers:
            stop_process(server.process)
