"""The rollout row's gate panel tells each gate's truth (docs/rollout.md, Gates): a gate rolls
the candidate back when its interval's low bound is above its red line, which is 0 for the
bad-share gates and the margin for the drift gate. The panel's queries run in Prometheus's own
engine (``promtool test rules``) on gate series as a server exports them, with intervals and
verdicts computed by the gates' own code (serving/rollout_gates.py): the gates whose low
bound the panel draws above their red line are exactly the gates whose verdict is fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from modelmon.dashboards import catalog, grafana
from modelmon.dashboards.spec import Prom
from modelmon.dashboards.templating import Expansion, Selection, TimeRange, expand_promql
from modelmon.rules.drift import dump_yaml
from modelmon.serving.rollout_gates import GATES, GateResult

PANEL = next(p for p in catalog.rollout().panels if p.title == "Gate intervals against their margins")
BOUNDS, MARGINS, FAILS_ABOVE = (q.expr for q in PANEL.queries if isinstance(q, Prom))
ALPHA = 0.05 / 3
INSTANCE = "r1:8080"
SHARES = (np.array([0.5, 0.5]), 5000.0)  # both versions' validation predictions: half each class, 5000 rows


def _results() -> dict[str, dict[str, GateResult]]:
    """Each model's gates, as the gates compute them. ``churn``: errors fail (30 of 100
    requests failed against none), and drift's low bound is above 0 but not above its margin
    (wait: the old panel's red line at 0 drew it as failing). ``spend``: drift fails."""
    same = (np.array([5.0, 1000.0]), np.array([5.0, 1000.0]))
    out = {}
    for model, errors, drift in (
        ("churn", (np.array([30.0, 100.0]), np.array([0.0, 100.0])), np.array([3500.0, 1500.0])),
        ("spend", same, np.array([4800.0, 200.0])),
    ):
        out[model] = {
            "errors": GATES["errors"].compare(*errors, ALPHA, 0.01, "errors"),
            "estimated_quality": GATES["estimated_quality"].compare(*same, ALPHA, 0.02, "estimated_quality"),
            "drift": GATES["drift"].compare(drift, np.array([2500.0, 2500.0]), ALPHA, 0.2, "drift", (SHARES, SHARES)),
        }
    return out


def _expand(expr: str, model: str) -> str:
    context = Expansion(TimeRange.last(3600, datetime.now(UTC)), variables={
        "cluster": Selection(()), "job": Selection(("modelmon",), multi=True),
        "model": Selection.single(model), "instance": Selection((INSTANCE,), multi=True),
    })
    return expand_promql(expr, context)


def test_each_gate_fails_above_its_own_line_in_prometheus(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (Debian package `prometheus`)")
    results = _results()
    churn_drift = results["churn"]["drift"]
    assert churn_drift.verdict != "fail" and 0 < churn_drift.low < churn_drift.margin, churn_drift
    assert results["spend"]["drift"].verdict == "fail" and results["churn"]["errors"].verdict == "fail"
    series = []
    for model, gates in results.items():
        labels = f'job="modelmon", instance="{INSTANCE}", model="{model}"'
        for gate, result in gates.items():
            for bound in ("low", "high"):
                value = getattr(result, bound)
                series.append({"series": f'modelmon_rollout_gate_bound{{{labels}, gate="{gate}", bound="{bound}"}}',
                               "values": f"{value!r}+0x10"})
            series.append({"series": f'modelmon_rollout_gate_margin{{{labels}, gate="{gate}"}}', "values": f"{result.margin!r}+0x10"})
    tests = []
    for model, gates in results.items():
        # The red line of each gate: what the panel draws as "<gate> fails above".
        tests.append({"expr": _expand(FAILS_ABOVE, model), "eval_time": "5m", "exp_samples": [
            {"labels": f'{{gate="{g}"}}', "value": r.margin if g == "drift" else 0} for g, r in sorted(gates.items())]})
        # The gates whose low bound the panel draws above their red line: those that fail.
        low_above = (f"count by (gate) ((({_expand(BOUNDS, model)}) > on (gate) group_left () ({_expand(FAILS_ABOVE, model)}))"
                     f' and on (bound) label_replace(vector(1), "bound", "low", "", ""))')
        tests.append({"expr": low_above, "eval_time": "5m", "exp_samples": [
            {"labels": f'{{gate="{g}"}}', "value": 1} for g, r in sorted(gates.items()) if r.verdict == "fail"]})
    document = {"rule_files": [], "evaluation_interval": "1m",
                "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}]}
    (tmp_path / "gates.test.yml").write_text(dump_yaml(document))
    tested = subprocess.run([promtool, "test", "rules", "gates.test.yml"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_grafana_draws_each_gates_lines_and_no_panel_wide_red_line(dialect: str) -> None:
    """In Grafana: the "fails above" lines red and the margins green, dashed, through
    overrides matching the legends' names (anchored, as Grafana reads a pattern without
    slashes); the bounds keep the palette; no threshold line at 0 for every gate."""
    serving = grafana.dashboards_json(dialect)[catalog.SERVING_UID]
    (panel,) = [p for p in serving["panels"] if p["title"] == PANEL.title]
    assert panel["fieldConfig"]["defaults"]["custom"].get("thresholdsStyle", {}).get("mode", "off") == "off"
    assert [t["value"] for t in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None]

    def look(name: str) -> tuple[str, bool] | None:
        for override in panel["fieldConfig"]["overrides"]:
            assert override["matcher"]["id"] == "byRegexpOrNames"
            if re.fullmatch(override["matcher"]["options"]["pattern"], name):
                properties = {p["id"]: p["value"] for p in override["properties"]}
                return properties["color"]["fixedColor"], properties.get("custom.lineStyle", {}).get("fill") == "dash"
        return None

    legends = [t["legendFormat"] for t in panel["targets"]]
    assert legends == ["{{gate}} {{bound}} {{instance}}", "{{gate}} margin", "{{gate}} fails above"]
    for gate in GATES:
        assert look(f"{gate} fails above") == ("red", True)
        assert look(f"{gate} margin") == ("green", True)
        for bound in ("low", "high"):
            assert look(f"{gate} {bound} {INSTANCE}") is None
