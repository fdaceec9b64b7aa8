"""Serving throughput and latency, side by side: modelmon against MLServer and BentoML.

The model is scikit-learn ``LogisticRegression(max_iter=10000)`` on ``load_breast_cancer()``
(30 numeric features); one request is one row. Every server runs as its own process, each
peer from its own venv under ``benchmarks/.peers/`` (built on first use, see
``peers/venvs.py``). Load comes from ``wrk`` (Debian package) with a Lua script holding the
POST body: after a warm-up, concurrency 1, 8 and 32 for ``--duration`` seconds each, for
``--rounds`` rounds, each round starting every server afresh (order rotated per round).
Reported: medians over rounds of requests/s, latency percentiles and the server's CPU per
request (its process tree's, from /proc), ratios against MLServer and against the ceiling
(``ceiling.py``: a bare ASGI app on the same HTTP stack, answering a fixed response; issue 21)
taken within each round, start-up time to ready, and resident memory of the server's process
tree. Then the batching study: modelmon with 64-row requests, adaptive batching on and off.
Then the tree study (issue 17): one XGBoost and one LightGBM classifier file (100 trees of depth 4 on the same
data), served by modelmon (as registered: the ONNX graph when it agrees, and natively) and by MLServer's
``mlserver-xgboost`` / ``mlserver-lightgbm`` runtimes (venv ``mlserver-trees``) from the same file, one row per
request, side by side in the same rounds; and each runtime's in-process per-call cost, native against ONNX.

    python benchmarks/serving.py                 # full run (about 18 minutes; builds peer venvs once)
    python benchmarks/serving.py --quick         # seconds: modelmon (and installed peers only)
    python benchmarks/serving.py --peers none    # modelmon only
    python benchmarks/serving.py --trees none    # without the tree study
    python benchmarks/serving.py --trees-only    # the tree study alone (about 20 minutes): serving_trees.json
    python benchmarks/serving.py --regression-only  # a regressor, everything on vs off (about 4 minutes)
    python benchmarks/serving.py --shadow-only   # with and without a shadow rollout (about 4 minutes)

``--shadow-only`` (issue 19): what a shadow rollout costs the callers. The classifier registered twice (version 2 is
the same model), served as version 1 by two modelmon servers, everything on, side by side: one following a running
shadow rollout of version 2 that copies all traffic (created in its store before it starts, with gates that never
end it), one without; one row per request. Reported: p50, p99 and requests/s of each, and their ratios shadow /
none at each concurrency (medians of per-round ratios), and the shadow copies by outcome in the last round (a copy
is shed while the model serves more than one request: docs/rollout.md); writes benchmarks/results/rollout_shadow.json
and its README section (serving-shadow). ``benchmarks/rollout_shadow.py`` runs the same.

``--regression-only`` (issue 18): a scikit-learn ``Ridge`` on ``make_regression`` (30 features), registered with
reference and validation data (so the prediction bins, the baseline and the label-free loss estimator exist),
served by modelmon with everything on and with monitoring off, side by side, one row per request; writes
benchmarks/results/serving_regression.json and its README section (serving-regression).

Writes benchmarks/results/serving.json and (full runs) its section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from peers import venvs  # noqa: E402

RESULTS = HERE / "results" / "serving.json"
TREE_RESULTS = HERE / "results" / "serving_trees.json"
REGRESSION_RESULTS = HERE / "results" / "serving_regression.json"
REGRESSION_MODEL = "reg"
SHADOW_RESULTS = HERE / "results" / "rollout_shadow.json"
README = HERE / "README.md"
MODEL_NAME = "bc"
LEVELS = (1, 8, 32)
MAIN_VENV_BIN = Path(sys.executable).parent
#: modelmon with no monitoring at all: no metrics beyond the request counters, no drift
#: accounting, no prediction log.
NOTHING_ON = ["--no-monitoring", "--no-prediction-log"]


# -- process helpers ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_request(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc."""
    pids, stack = [], [pid]
    while stack:
        p = stack.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                stack.extend(int(c) for c in (task / "children").read_text().split())
            except OSError:
                pass
    return pids


def memory_of_tree(pid: int) -> dict[str, float]:
    """Resident memory of the process tree in MiB: the sum of each process's RSS, and the sum
    of PSS (shared pages split between the processes that share them: no double count)."""
    rss = pss = 0
    pids = process_tree(pid)
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return {"rss_mib": round(rss / 1024, 1), "pss_mib": round(pss / 1024, 1), "processes": len(pids)}


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid``'s process tree, from /proc."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def settle(pid: int, limit: float = 15.0) -> float:
    """Wait until ``pid``'s process tree is idle (at most one clock tick, 4% of a core, in 0.25 s,
    twice in a row), at most ``limit`` seconds; the seconds waited. A server still busy after its load
    (a backlog, a writer catching up) would otherwise take its work into the next server's
    measurement."""
    started = time.perf_counter()
    quiet, last = 0, tree_cpu_seconds(pid)
    while quiet < 2 and time.perf_counter() - started < limit:
        time.sleep(0.25)
        now = tree_cpu_seconds(pid)
        quiet = quiet + 1 if now - last <= 0.01 else 0  # at most one 10 ms tick
        last = now
    return round(time.perf_counter() - started, 2)


class MemorySampler:
    """The largest process-tree memory seen while a load runs (sampled twice a second)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = {"rss_mib": 0.0, "pss_mib": 0.0, "processes": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            sample = memory_of_tree(self.pid)
            if sample["rss_mib"] > self.peak["rss_mib"]:
                self.peak = sample

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# -- the servers ----------------------------------------------------------------------


@dataclass
class Server:
    """One configuration under test: how to prepare it, start it and ask it."""

    key: str
    label: str
    command: list[str]
    ready_path: str
    infer_path: str
    body_for: object  # rows (list of lists) -> bytes
    check: object  # (response json, n_rows) -> bool
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    port: int = 0
    process: subprocess.Popen | None = None
    log: Path | None = None

    def start(self, workdir: Path, ready_timeout: float = 120.0) -> dict[str, float]:
        """Start the server; the seconds from spawn to ready (and to a first good answer)."""
        self.log = workdir / f"{self.key}.log"
        started = time.perf_counter()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, cwd=self.cwd,
                env={**os.environ, **self.env}, start_new_session=True,
            )
        deadline = started + ready_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.process.returncode}; see {self.log}:\n{tail(self.log)}")
            try:
                if http_request(self.port, "GET", self.ready_path, timeout=1.0)[0] == 200:
                    break
            except OSError:
                pass
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{self.label} not ready after {ready_timeout} s; see {self.log}:\n{tail(self.log)}")
            time.sleep(0.01)
        ready = time.perf_counter() - started
        while True:  # some servers report ready before their model answers
            status, content = http_request(self.port, "POST", self.infer_path, self.body_for(ROWS[:1]), timeout=30)
            if status == 200:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.label}: inference answered {status}: {content[:300]!r}")
            time.sleep(0.01)
        first_answer = time.perf_counter() - started
        return {"ready_seconds": round(ready, 3), "first_answer_seconds": round(first_answer, 3)}

    def verify(self, rows: int) -> None:
        status, content = http_request(self.port, "POST", self.infer_path, self.body_for(ROWS[:rows]), timeout=30)
        if status != 200 or not self.check(json.loads(content), rows):
            raise RuntimeError(f"{self.label}: unexpected answer {status}: {content[:400]!r}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        pgid = self.process.pid  # start_new_session: its own process group
        os.killpg(pgid, signal.SIGINT)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.process.wait()
        time.sleep(0.3)  # let ports and memory go before the next server starts
        try:  # stragglers of the same session (workers of a supervisor)
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def v2_body(rows: list[list[float]], outputs: list[str] | None = None) -> bytes:
    request = {"inputs": [{"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP64",
                           "data": [v for row in rows for v in row]}]}
    if outputs:
        request["outputs"] = [{"name": o} for o in outputs]
    return json.dumps(request).encode()


def check_modelmon(answer: dict, rows: int) -> bool:
    outputs = {o["name"]: o for o in answer["outputs"]}
    return outputs["probabilities"]["shape"] == [rows, 2] and outputs["prediction_id"]["shape"] == [rows]


def check_mlserver(answer: dict, rows: int) -> bool:
    return answer["outputs"][0]["name"] == "predict_proba" and answer["outputs"][0]["shape"] == [rows, 2]


def check_bentoml(answer, rows: int) -> bool:
    return np.asarray(answer).shape == (rows, 2)


def modelmon_server(key: str, label: str, registry: Path, flags: list[str], source: Path | None = None,
                    model: str = MODEL_NAME) -> Server:
    """``modelmon serve`` with its own MODELMON_HOME (the default SQLite store of the prediction
    log and its spool), kept across rounds: the first round's start creates the store, later
    ones restart on it. ``source``: another checkout's ``src`` to serve with (``--baseline``),
    in this venv."""
    port = free_port()
    home = registry.parent / f"home-{key}"
    home.mkdir(exist_ok=True)
    command = [str(MAIN_VENV_BIN / "python"), "-m", "modelmon.cli", "serve", "--registry", str(registry),
               "--port", str(port), "--model", model, "--drain-seconds", "0", *flags]
    env = {"MODELMON_HOME": str(home)} | ({"PYTHONPATH": str(source)} if source is not None else {})
    return Server(key, label, command, f"/v2/models/{model}/ready", f"/v2/models/{model}/infer",
                  v2_body, check_modelmon, env=env, cwd=home, port=port)


def ceiling_server(key: str = "ceiling", label: str = "ceiling: bare ASGI app, fixed answer") -> Server:
    """The bare ASGI app of ``ceiling.py``: modelmon's HTTP stack with nothing behind it (issue 21).
    Its answer is a fixed one-row one whatever the request's rows (it reads them, computes
    nothing): the check accepts that answer for any request."""
    port = free_port()
    command = [str(MAIN_VENV_BIN / "python"), str(HERE / "ceiling.py"), str(port)]
    return Server(key, label, command, "/", f"/v2/models/{MODEL_NAME}/infer",
                  v2_body, lambda answer, rows: check_modelmon(answer, 1), port=port)


def baseline_source(revision: str, workdir: Path) -> Path:
    """A checkout of ``revision`` (``--baseline``), whose ``src`` a server can run from."""
    tree = workdir / f"baseline-{revision}"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), revision], cwd=ROOT, check=True,
                   capture_output=True)
    return tree / "src"


def mlserver_server(key: str, label: str, workdir: Path, parallel_workers: int | None) -> Server:
    port, grpc, metrics = free_port(), free_port(), free_port()
    directory = workdir / key
    setup = [str(venvs.python("mlserver")), str(HERE / "peers" / "serving_setup.py"), "mlserver", str(directory),
             "--http-port", str(port), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    if parallel_workers is not None:
        setup += ["--parallel-workers", str(parallel_workers)]
    subprocess.run(setup, check=True, env=venvs.env())
    command = [str(venvs.ROOT / "mlserver" / "bin" / "mlserver"), "start", str(directory)]
    return Server(key, label, command, f"/v2/models/{MODEL_NAME}/ready", f"/v2/models/{MODEL_NAME}/infer",
                  lambda rows: v2_body(rows, ["predict_proba"]), check_mlserver,
                  env=venvs.PEER_ENV, port=port)


def bentoml_server(workdir: Path) -> Server:
    port = free_port()
    directory = workdir / "bentoml"
    subprocess.run([str(venvs.python("bentoml")), str(HERE / "peers" / "serving_setup.py"), "bentoml", str(directory)],
                   check=True, env=venvs.env())
    command = [str(venvs.ROOT / "bentoml" / "bin" / "bentoml"), "serve", "bentoml_service:BreastCancer",
               "--host", "127.0.0.1", "--port", str(port)]
    env = {**venvs.PEER_ENV, "BENCH_MODEL": str(directory / "model.joblib"), "BENTOML_HOME": str(directory / "home")}
    return Server("bentoml", "BentoML (workers=1)", command, "/readyz", "/predict",
                  lambda rows: json.dumps({"input": rows}).encode(), check_bentoml,
                  env=env, cwd=HERE / "peers", port=port)


# -- load -----------------------------------------------------------------------------

LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def lua_script(path: Path, body: bytes) -> Path:
    text = body.decode()
    assert "]==]" not in text
    path.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = [==[{text}]==]\n{LUA_DONE}")
    return path


def wrk(port: int, path: str, script: Path, connections: int, seconds: float) -> dict:
    """One wrk run (one thread: the load generator shares the 2 cores with the server)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
               "-s", str(script), f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    match = re.search(r"^WRKJSON (.*)$", out.stdout, re.M)
    if not match:
        raise RuntimeError(f"wrk produced no result: {out.stdout}\n{out.stderr}")
    raw = json.loads(match.group(1))
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return {
        "requests_per_second": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
        "mean_ms": round(raw["mean_us"] / 1000, 3), "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"], "errors": errors,
    }


def measure_group(group: dict[str, tuple[Server, int]], workdir: Path, levels: tuple[int, ...], seconds: float,
                  warmup: float) -> dict:
    """Start every server of ``group`` (one at a time, each start timed alone), warm each up,
    then at each concurrency load them one after another (order rotated per level, and
    reversed on every other level, so that no server always follows the same one), so the
    servers compared meet the shared machine's background load within seconds of each other.
    After each load the server is left to settle (``settle``) before the next starts; finally
    stop them all. ``group`` maps a key to the server and the rows per request."""
    results: dict[str, dict] = {}
    scripts: dict[str, Path] = {}
    try:
        for key, (server, rows) in group.items():
            load = os.getloadavg()[0]
            timing = server.start(workdir)
            server.verify(rows)
            results[key] = {**timing, "idle_memory": memory_of_tree(server.process.pid), "levels": {},
                            "loaded_memory": {"rss_mib": 0.0, "pss_mib": 0.0, "processes": 0},
                            "load_average_1min": [round(load, 2), round(load, 2)]}
            scripts[key] = lua_script(workdir / f"{key}-{rows}.lua", server.body_for(ROWS[:rows]))
        if warmup > 0:
            for key, (server, _) in group.items():
                wrk(server.port, server.infer_path, scripts[key], max(levels), warmup)
                settle(server.process.pid)
        keys = list(group)
        for i, c in enumerate(levels):
            order = keys[i % len(keys):] + keys[: i % len(keys)]
            if i % 2:  # a rotation alone keeps each server behind the same one
                order.reverse()
            for key in order:
                server = group[key][0]
                cpu = tree_cpu_seconds(server.process.pid)
                with MemorySampler(server.process.pid) as sampler:
                    measured = wrk(server.port, server.infer_path, scripts[key], c, seconds)
                # The server's own CPU per request: unlike requests/s, hardly moved by what else runs.
                cpu = tree_cpu_seconds(server.process.pid) - cpu
                measured["server_cpu_us_per_request"] = round(1e6 * cpu / max(1, measured["requests"]), 1)
                results[key]["levels"][str(c)] = measured
                results[key]["levels"][str(c)]["settle_seconds"] = settle(server.process.pid)
                entry = results[key]
                if sampler.peak["rss_mib"] > entry["loaded_memory"]["rss_mib"]:
                    entry["loaded_memory"] = sampler.peak
                load = round(os.getloadavg()[0], 2)
                entry["load_average_1min"] = [min(entry["load_average_1min"][0], load), max(entry["load_average_1min"][1], load)]
    finally:
        for server, _ in group.values():
            server.stop()
    return {key: results[key] | {"levels": {str(c): results[key]["levels"][str(c)] for c in levels}} for key in results}


# -- the model and modelmon's registry ------------------------------------------------


def cancer_frame():
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return frame


def prepare_modelmon(workdir: Path, versions: int = 1) -> Path:
    """Register the model with its reference and validation data, so the reference profile
    exists and drift accounting runs on every batch (as ``modelmon register --reference``);
    ``versions`` times (the shadow case's candidate is the same model again)."""
    from sklearn.linear_model import LogisticRegression

    from modelmon.registry import register_model

    frame = cancer_frame()
    X = frame.drop(columns="target")
    model = LogisticRegression(max_iter=10000).fit(X, frame["target"])
    registry = workdir / "registry"
    for _ in range(versions):
        card = register_model(model, name=MODEL_NAME, reference=frame, target="target", validation=frame,
                              registry=registry)
        assert card.reference_profile is not None, "the benchmark needs the reference profile"
    return registry


ROWS: list[list[float]] = []


# -- the regression study (issue 18) -----------------------------------------------------


def regression_frames():
    """``make_regression`` with 30 features (as the classifier's data), 1,000 training and 1,000
    validation rows: at least 200 validation rows, so the label-free loss estimator is fitted
    rather than the constant fallback (docs/regression.md)."""
    import pandas as pd
    from sklearn.datasets import make_regression

    X, y = make_regression(n_samples=2000, n_features=30, n_informative=20, noise=10.0, random_state=0)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(30)])
    frame["target"] = y
    return frame.iloc[:1000].reset_index(drop=True), frame.iloc[1000:].reset_index(drop=True)


def prepare_regression(workdir: Path) -> Path:
    """Register a ``Ridge`` regressor with its reference (training) and validation data."""
    from sklearn.linear_model import Ridge

    from modelmon.registry import register_model

    train, validation = regression_frames()
    model = Ridge().fit(train.drop(columns="target"), train["target"])
    registry = workdir / "registry"
    card = register_model(model, name=REGRESSION_MODEL, reference=train, target="target", validation=validation,
                          registry=registry)
    assert card.reference_profile is not None, "the benchmark needs the reference profile"
    return registry


def check_regression(answer: dict, rows: int) -> bool:
    outputs = {o["name"]: o for o in answer["outputs"]}
    return outputs["prediction"]["shape"] == [rows] and outputs["prediction_id"]["shape"] == [rows]


def regression_server(key: str, label: str, registry: Path, flags: list[str]) -> Server:
    server = modelmon_server(key, label, registry, flags, model=REGRESSION_MODEL)
    server.check = check_regression
    return server


def finish_markdown(lines: list[str], result: dict, notes: bool) -> str:
    """A README section's end, the same for every run: versions, the servers as started,
    the run's notes (``notes``) and the rounds that failed."""
    lines = [*lines, "", "Versions: " + ", ".join(f"{k} {val}" for k, val in result["versions"].items() if val) + ".",
             "", "Servers as started (ports chosen free at run time):", ""]
    lines += [f"- {result['labels'][key]}: `{command}`" for key, command in result["commands"].items()]
    if notes:
        lines += ["", *result.get("notes", [])]
    if result.get("failures"):
        lines += ["", "Rounds (or parts) that failed and are left out of the medians:", ""]
        lines += [f"- {f.splitlines()[0]}" for f in result["failures"]]
    return "\n".join(lines).rstrip() + "\n"


def side_by_side_text(result: dict) -> str:
    """How a two-server run (``--regression-only``, ``--shadow-only``) was measured, for its
    README section."""
    st = result["settings"]
    return (f"`wrk` {result['versions']['wrk']}, one thread, concurrency {', '.join(map(str, st['levels']))}, "
            f"{st['duration_seconds']:g} s each after a {st['warmup_seconds']:g} s warm-up, {st['rounds']} rounds, "
            "each starting both servers afresh and loading them one after another at each concurrency (order "
            "rotated); medians over rounds, ratios taken within a round. "
            f"{result['machine']['cpus']} cores, shared with the load generator and with whatever else ran on the "
            f"machine: the 1-minute load average went from {result['load_average_1min'][0]:.1f} to "
            f"{result['load_average_1min'][1]:.1f} during the run. Run on {result['date']} with `{st['command']}` "
            f"({result['seconds'] / 60:.0f} minutes).")


def regression_markdown(result: dict) -> str:
    """The README section of a ``--regression-only`` run."""
    s, st = result["summary"], result["settings"]
    levels = [str(c) for c in st["levels"]]
    lines = ["## Serving a regression model (`serving.py --regression-only`)", "",
             "scikit-learn `Ridge()` on `make_regression(n_samples=2000, n_features=30, n_informative=20, noise=10, "
             "random_state=0)`, registered with the first 1,000 rows as reference and the other 1,000 as validation "
             "(so the prediction bins, the validation baseline and the label-free loss estimator exist: "
             "[docs/regression.md](../docs/regression.md)); one row per request, V2 JSON. modelmon with everything on "
             "(`modelmon serve`'s defaults: metrics, prediction bins, drift accounting, the loss estimate per row, "
             "the prediction log) against the same model with `--no-monitoring --no-prediction-log`. "
             + side_by_side_text(result), "",
             "| server | c | requests/s | p50 ms | p90 ms | p99 ms | errors | RSS loaded MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for key, entry in s.items():
        for c in levels:
            x = entry["levels"][c]
            lines.append(f"| {result['labels'][key]} | {c} | {x['requests_per_second']:,.0f} | {x['p50_ms']:.2f} | "
                         f"{x['p90_ms']:.2f} | {x['p99_ms']:.2f} | {x['errors']} | {entry['loaded_rss_mib']:.0f} |")
    per = result["ratios"].get("modelmon/modelmon_nomon", {})
    if per:
        lines += ["", "| ratio | " + " | ".join(f"c={c} requests/s | c={c} p99" for c in levels) + " |",
                  "|---|" + "---|---|" * len(levels),
                  "| everything on / monitoring off | "
                  + " | ".join(f"{per[c]['throughput_ratio']:.2f}x | {per[c]['p99_ratio']:.2f}x" for c in levels) + " |",
                  "", "Per-round requests/s ratios (on / off): "
                  + "; ".join(f"c={c}: {per[c]['per_round_throughput_ratio']}" for c in levels) + "."]
    target = result["targets"].get("monitoring_keeps_90pct")
    if target:
        lines += ["", f"Target (issue 18): everything on >= 0.90 of monitoring off at every concurrency: "
                  f"**{'met' if target['met'] else 'NOT met'}** (measured: `{json.dumps(target['measured'])}`)."]
    return finish_markdown(lines, result, notes=False)


EXTRA_KEYS = ("batch64_on", "batch64_off", "batch1_off", "ceiling64")


# -- the shadow case (issue 19) ---------------------------------------------------------

SHADOW_KEYS = {"modelmon_shadow": "modelmon, everything on, shadow rollout copying all traffic",
               "modelmon": "modelmon, everything on, no rollout"}


@dataclass
class ShadowServer(Server):
    """A modelmon server that reads its shadow counters (modelmon_rollout_shadow_total by
    outcome) before it stops: the copies answered and shed under the load just measured."""

    copies: dict[str, float] = field(default_factory=dict)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                _, content = http_request(self.port, "GET", "/metrics")
                self.copies = {m.group(1): float(m.group(2)) for m in re.finditer(
                    r'^modelmon_rollout_shadow_total\{model="[^"]*",outcome="(\w+)"\} (\S+)$', content.decode(), re.M)}
            except OSError:
                pass
        super().stop()


def prepare_shadow(registry: Path) -> None:
    """A running shadow rollout of version 2 (the same model) against version 1, copying all
    traffic, in the store of the shadow server's MODELMON_HOME (``modelmon_server``'s), so the
    server follows it from its start. Its only gate, ``errors``, on a candidate that never
    fails, with a billion requests a step: it runs through every round."""
    from modelmon.registry.store import Registry
    from modelmon.serving import rollout_commands
    from modelmon.store import open_store

    home = registry.parent / "home-modelmon_shadow"
    home.mkdir(exist_ok=True)
    rollout_commands.start(open_store(home / "modelmon.db"), Registry(registry), MODEL_NAME, {
        "candidate": 2, "primary": 1, "mode": "shadow", "gates": ["errors"], "min_requests": 10**9}, "benchmark")


def shadow_server(key: str, registry: Path) -> Server:
    """modelmon serving version 1 only (``--model bc:1``): the rollout loads the candidate."""
    server = modelmon_server(key, SHADOW_KEYS[key], registry, [])
    server.command[server.command.index("--model") + 1] = f"{MODEL_NAME}:1"
    # This checkout's code, which migrated the store in ``prepare_shadow`` (a worktree's
    # newer schema is unknown to the code the virtualenv was installed from).
    server.env["PYTHONPATH"] = str(ROOT / "src")
    return ShadowServer(**{f: getattr(server, f) for f in Server.__dataclass_fields__})


def shadow_ratios(rounds: list[dict], levels: tuple[int, ...]) -> dict:
    """Per level, medians over rounds of shadow / none: ``ratios``' requests/s and p99, and p50."""
    out = ratios(rounds, "modelmon_shadow", "modelmon", levels)
    both = [r for r in rounds if "modelmon_shadow" in r and "modelmon" in r]
    for c in out:
        per = [r["modelmon_shadow"]["levels"][c]["p50_ms"] / r["modelmon"]["levels"][c]["p50_ms"] for r in both]
        out[c] |= {"p50_ratio": median(per), "per_round_p50_ratio": [round(x, 3) for x in per],
                   "per_round_p99_ratio": [round(r["modelmon_shadow"]["levels"][c]["p99_ms"]
                                                 / r["modelmon"]["levels"][c]["p99_ms"], 3) for r in both]}
    return out


def shadow_markdown(result: dict) -> str:
    """The README section of a ``--shadow-only`` run."""
    s, st = result["summary"], result["settings"]
    levels = [str(c) for c in st["levels"]]
    lines = ["## What a shadow rollout costs the callers (`serving.py --shadow-only`)", "",
             "The classifier of the main table registered twice (version 2 is the same model), served as version 1 "
             "by two modelmon servers with everything on, side by side: one following a running shadow rollout of "
             "version 2 that copies all traffic (docs/rollout.md: a copy is shed while the model serves more than "
             "one request, so the candidate only uses capacity the primary leaves idle, and the copies queued within "
             "a linger, `--shadow-linger-ms` 20 by default, go to the candidate as one model call), one with no "
             "rollout. One row per request, V2 JSON, " + side_by_side_text(result), "",
             "| server | c | requests/s | p50 ms | p90 ms | p99 ms | CPU µs/request | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for key, entry in s.items():
        for c in levels:
            x = entry["levels"][c]
            lines.append(f"| {result['labels'][key]} | {c} | {x['requests_per_second']:,.0f} | {x['p50_ms']:.2f} | "
                         f"{x['p90_ms']:.2f} | {x['p99_ms']:.2f} | {x.get('server_cpu_us_per_request', 0):.0f} | "
                         f"{x['errors']} |")
    per = result["ratios"].get("modelmon_shadow/modelmon", {})
    if per:
        lines += ["", "| shadow / none | " + " | ".join(f"c={c}" for c in levels) + " |",
                  "|---|" + "---|" * len(levels),
                  "| p50 | " + " | ".join(f"{per[c]['p50_ratio']:.2f}x" for c in levels) + " |",
                  "| p99 | " + " | ".join(f"{per[c]['p99_ratio']:.2f}x" for c in levels) + " |",
                  "| requests/s | " + " | ".join(f"{per[c]['throughput_ratio']:.2f}x" for c in levels) + " |",
                  "| server CPU per request | " + " | ".join(
                      f"{per[c]['cpu_per_request_ratio']:.2f}x" if "cpu_per_request_ratio" in per[c] else "-"
                      for c in levels) + " |",
                  "", "Per-round ratios, p99: " + "; ".join(f"c={c}: {per[c]['per_round_p99_ratio']}" for c in levels)
                  + "; requests/s: " + "; ".join(f"c={c}: {per[c]['per_round_throughput_ratio']}" for c in levels) + "."]
    copies = result.get("shadow_copies_last_round")
    if copies:
        lines += ["", "Shadow copies of the last round, over its warm-up and every concurrency, by outcome "
                  "(`modelmon_rollout_shadow_total`): " + ", ".join(f"{k} {v:,.0f}" for k, v in copies.items()) + "."]
    return finish_markdown(lines, result, notes=False)


# -- the tree study (issue 17) ----------------------------------------------------------

TREE_FRAMEWORKS = ("xgboost", "lightgbm")
TREE_PEER = "mlserver-trees"
TREE_NAMES = {"xgboost": "XGBoost", "lightgbm": "LightGBM"}
#: The tree models: boosting rounds and depth (LightGBM: leaves of a depth-4 tree).
TREES, DEPTH = 100, 4
#: The servers of one framework's group: key suffix -> label.
TREE_SERVERS = {
    "modelmon": "modelmon, everything on",
    "modelmon_native": "modelmon, everything on, served natively (registered with --no-onnx)",
    "mlserver_pw0": "MLServer parallel_workers=0",
    "mlserver_default": "MLServer default (parallel_workers=1)",
}


def tree_frameworks(wanted: str) -> list[str]:
    """The frameworks of ``--trees`` whose modules are installed in this venv."""
    import importlib.util

    names = [] if wanted == "none" else [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = set(names) - set(TREE_FRAMEWORKS)
    if unknown:
        sys.exit(f"--trees: unknown {sorted(unknown)}; choose from {TREE_FRAMEWORKS} or none")
    return [n for n in names if importlib.util.find_spec(n) is not None]


def train_tree_file(framework: str, directory: Path) -> Path:
    """The framework's classifier on the benchmark data as an unnamed array (MLServer's runtimes
    pass an array), written as the framework writes it: XGBoost's JSON from ``XGBClassifier.save_model``
    (which MLServer loads as a classifier, with ``predict_proba``), LightGBM's text model file."""
    frame = cancer_frame()
    X, y = frame.drop(columns="target").to_numpy(), frame["target"].to_numpy()
    directory.mkdir(parents=True, exist_ok=True)
    if framework == "xgboost":
        import xgboost as xgb

        path = directory / "model.json"
        xgb.XGBClassifier(n_estimators=TREES, max_depth=DEPTH, n_jobs=1, random_state=0).fit(X, y).save_model(str(path))
        return path
    import lightgbm as lgb

    path = directory / "model.txt"
    model = lgb.LGBMClassifier(n_estimators=TREES, num_leaves=2**DEPTH, max_depth=DEPTH, n_jobs=1, random_state=0,
                               verbose=-1).fit(X, y)
    model.booster_.save_model(str(path))
    return path


def per_call_microseconds(predictor, frame, signature) -> dict[str, float]:
    """In-process cost of one ``predict`` call on 1 and 64 rows (best of 5 timeit repeats)."""
    import timeit

    from modelmon.types import FeatureBatch

    out = {}
    for rows, number in ((1, 2000), (64, 500)):
        batch = FeatureBatch.from_frame(frame.head(rows), signature)
        out[str(rows)] = round(min(timeit.repeat(lambda b=batch: predictor.predict(b), number=number, repeat=5))
                               / number * 1e6, 1)
    return out


def prepare_trees(workdir: Path, registry: Path, frameworks: list[str]) -> dict[str, dict]:
    """Each framework's model file, registered twice (``<name>``: ONNX kept if it agrees;
    ``<name>-native``: not converted), with what registration decided and the per-call costs."""
    from modelmon.registry import Registry, register_model
    from modelmon.runtimes.base import runtime_named, verified_path

    frame = cancer_frame()
    store = Registry(registry)
    out = {}
    for framework in frameworks:
        path = train_tree_file(framework, workdir / "trees" / framework)
        name = f"{MODEL_NAME}-{framework}"
        card = register_model(path, name=name, reference=frame, target="target", validation=frame, registry=store)
        register_model(path, name=f"{name}-native", reference=frame, target="target", validation=frame,
                       registry=store, convert_to_onnx=False)
        directory = store.version_dir(card.name, card.version)
        native = runtime_named(card.flavor).load(verified_path(directory, card.artifact), card.artifact, card.signature)
        costs = {"native": per_call_microseconds(native, frame, card.signature)}
        if card.serving_artifact is not None:
            costs["onnx"] = per_call_microseconds(store.load_predictor(card), frame, card.signature)
        out[framework] = {"model": name, "file": str(path), "served_as": card.runtime,
                          "onnx_check": card.onnx_check.model_dump() if card.onnx_check else None,
                          "per_call_us": costs}
    return out


def mlserver_tree_server(framework: str, key: str, label: str, model_file: Path, workdir: Path,
                         parallel_workers: int | None) -> Server:
    """MLServer's runtime for ``framework`` serving ``model_file`` (settings written here: the
    model is the file modelmon registered, not one trained in the peer's venv)."""
    port, grpc, metrics = free_port(), free_port(), free_port()
    directory = workdir / key
    directory.mkdir(parents=True, exist_ok=True)
    settings = {"host": "127.0.0.1", "http_port": port, "grpc_port": grpc, "metrics_port": metrics}
    if parallel_workers is not None:
        settings["parallel_workers"] = parallel_workers
    (directory / "settings.json").write_text(json.dumps(settings))
    implementation = {"xgboost": "mlserver_xgboost.XGBoostModel", "lightgbm": "mlserver_lightgbm.LightGBMModel"}
    (directory / "model-settings.json").write_text(json.dumps({
        "name": MODEL_NAME, "implementation": implementation[framework],
        "parameters": {"uri": str(model_file), "version": "1"}}))
    command = [str(venvs.ROOT / TREE_PEER / "bin" / "mlserver"), "start", str(directory)]
    if framework == "xgboost":  # the classifier's probabilities, as modelmon answers
        body, check = (lambda rows: v2_body(rows, ["predict_proba"])), check_mlserver
    else:  # mlserver-lightgbm has one output, the booster's prediction: P(class 1) per row
        body, check = v2_body, check_mlserver_lightgbm
    # One OpenMP thread, as modelmon's tree runtimes predict: by default both frameworks use
    # every core per call, which on a shared 2-core machine cost MLServer's XGBoost runtime
    # 2-5x of its requests/s (measured while writing this study).
    env = {**venvs.PEER_ENV, "OMP_NUM_THREADS": "1"}
    return Server(key, label, command, f"/v2/models/{MODEL_NAME}/ready", f"/v2/models/{MODEL_NAME}/infer",
                  body, check, env=env, port=port)


def check_mlserver_lightgbm(answer: dict, rows: int) -> bool:
    return answer["outputs"][0]["name"] == "predict" and answer["outputs"][0]["shape"][0] == rows


def tree_group(framework: str, registry: Path, trees: dict[str, dict], workdir: Path, peer: bool) -> dict:
    """One framework's servers, keyed ``<framework>_<server>``."""
    name, path = trees[framework]["model"], Path(trees[framework]["file"])
    factories = {
        "modelmon": lambda key: modelmon_server(key, "", registry, [], model=name),
        "modelmon_native": lambda key: modelmon_server(key, "", registry, [], model=f"{name}-native"),
    }
    if peer:
        factories["mlserver_pw0"] = lambda key: mlserver_tree_server(framework, key, "", path, workdir, 0)
        factories["mlserver_default"] = lambda key: mlserver_tree_server(framework, key, "", path, workdir, None)
    group = {}
    for suffix, factory in factories.items():
        key = f"{framework}_{suffix}"
        server = factory(key)
        server.label = f"{TREE_NAMES[framework]}: {TREE_SERVERS[suffix]}"
        group[key] = (server, 1)
    return group


def tree_targets(summary: dict, ratio_table: dict, frameworks: list[str], levels: tuple[int, ...]) -> dict:
    """Issue 17's targets per framework: modelmon with everything on at least 3x MLServer's
    requests/s at c=32, and a lower p99 at every concurrency (against both MLServer setups)."""
    out = {}
    top = str(max(levels))
    for framework in frameworks:
        on = f"{framework}_modelmon"
        peers = [k for k in (f"{framework}_mlserver_default", f"{framework}_mlserver_pw0") if k in summary]
        if on not in summary or not peers:
            continue
        vs = {k: ratio_table[f"{on}/{k}"] for k in peers}
        throughput = {k: vs[k][top]["throughput_ratio"] for k in peers}
        p99 = {k: {str(c): vs[k][str(c)]["p99_ratio"] for c in levels} for k in peers}
        out[f"{framework}_throughput_3x_mlserver_at_32"] = {
            "target": ">= 3.0", "measured": throughput, "met": min(throughput.values()) >= 3.0}
        out[f"{framework}_p99_below_mlserver_every_level"] = {
            "target": "< 1.0 at every level", "measured": p99,
            "met": all(v < 1.0 for per in p99.values() for v in per.values())}
    return out


def tree_markdown(result: dict) -> list[str]:
    t, st = result["trees"], result["settings"]
    levels = [str(c) for c in st["levels"]]
    lines = ["", "### XGBoost and LightGBM", "",
             f"The same data, one row per request, in the same rounds: an `XGBClassifier` and an `LGBMClassifier` "
             f"({TREES} trees of depth {DEPTH}, trained on the unnamed array), each written to one file by its "
             "framework (`XGBClassifier.save_model` JSON, LightGBM's text model file) and served from that file by "
             "modelmon (registered with the reference and validation data: everything on) and by MLServer's "
             "`mlserver-xgboost` / `mlserver-lightgbm` runtimes (XGBoost asked for `predict_proba`; MLServer's "
             "LightGBM runtime answers the booster's prediction, P(class 1)), both with `OMP_NUM_THREADS=1` (modelmon's "
             "tree runtimes predict on one thread; with every core per call MLServer's XGBoost answered 2-5x fewer "
             "requests here). modelmon serves the ONNX graph "
             "converted at registration when it agrees within 1e-5, and the same file registered without "
             "conversion is served natively by the framework.", "",
             "| framework | served by modelmon as | ONNX check | per call native, 1 row / 64 rows (us) | "
             "per call ONNX, 1 row / 64 rows (us) |", "|---|---|---|---|---|"]
    for framework, m in t["models"].items():
        check = m["onnx_check"] or {}
        verdict = (f"kept, max difference {check['max_abs_difference']:.1g} on {check['rows_compared']} rows"
                   if check.get("used") else f"not kept: {check.get('reason', '')}")
        native = m["per_call_us"]["native"]
        onnx = m["per_call_us"].get("onnx")
        lines.append(f"| {TREE_NAMES[framework]} | {m['served_as']} | {verdict} | {native['1']:.0f} / {native['64']:.0f} | "
                     + (f"{onnx['1']:.0f} / {onnx['64']:.0f} |" if onnx else "- |"))
    lines += ["", "| server | c | requests/s | p50 ms | p90 ms | p99 ms | errors | RSS loaded MiB |",
              "|---|---|---|---|---|---|---|---|"]
    for key, entry in t["summary"].items():
        for c in levels:
            x = entry["levels"][c]
            lines.append(f"| {result['labels'][key]} | {c} | {x['requests_per_second']:,.0f} | {x['p50_ms']:.2f} | "
                         f"{x['p90_ms']:.2f} | {x['p99_ms']:.2f} | {x['errors']} | {entry['loaded_rss_mib']:.0f} |")
    if t["ratios"]:
        lines += ["", "| ratio | " + " | ".join(f"c={c} requests/s | c={c} p99" for c in levels) + " |",
                  "|---|" + "---|---|" * len(levels)]
        for name, per in t["ratios"].items():
            if not per:
                continue
            a, b = name.split("/")
            cells = " | ".join(f"{per[c]['throughput_ratio']:.2f}x | {per[c]['p99_ratio']:.2f}x" for c in levels)
            lines.append(f"| {result['labels'][a]} / {result['labels'][b]} | {cells} |")
    if t["targets"]:
        lines += ["", "Targets (issue 17), against both MLServer setups:", ""]
        for key, target in t["targets"].items():
            framework, _, what = key.partition("_")
            text = ("everything on >= 3x MLServer's requests/s at c=32" if what.startswith("throughput")
                    else "p99 below MLServer's at every concurrency")
            lines.append(f"- {TREE_NAMES[framework]}: {text}: **{'met' if target['met'] else 'NOT met'}** "
                         f"(measured: `{json.dumps(target['measured'])}`)")
    return lines


def trees_only_markdown(result: dict) -> str:
    """The README section of a ``--trees-only`` run: how it ran, the tree tables, versions."""
    st = result["settings"]
    lines = ["## Serving tree models (`serving.py --trees-only`)", "",
             f"`wrk` {result['versions']['wrk']}, one thread, concurrency {', '.join(map(str, st['levels']))}, "
             f"{st['duration_seconds']:g} s each after a {st['warmup_seconds']:g} s warm-up, {st['rounds']} rounds, "
             "each starting every server afresh and loading them one after another at each concurrency (order "
             "rotated), so that compared servers meet the same background load; medians over rounds, ratios "
             f"taken within a round. {result['machine']['cpus']} cores, shared with the load generator and with "
             "whatever else ran on the machine: the 1-minute load average went from "
             f"{result['load_average_1min'][0]:.1f} to {result['load_average_1min'][1]:.1f} during the run. Run on "
             f"{result['date']} with `{st['command']}` ({result['seconds'] / 60:.0f} minutes).",
             *tree_markdown(result)[2:]]
    return finish_markdown(lines, result, notes=True)


# -- summary --------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return round(float(statistics.median(values)), 3) if values else float("nan")


def summarise(rounds: list[dict], keys: list[str], levels: tuple[int, ...]) -> dict:
    """Medians over rounds per server and level, and ratios taken within each round."""
    out: dict = {}
    for key in keys:
        runs = [r[key] for r in rounds if key in r]
        if not runs:
            continue
        entry = {
            "ready_seconds": median([r["ready_seconds"] for r in runs]),
            "ready_seconds_first_round": runs[0]["ready_seconds"],
            "first_answer_seconds": median([r["first_answer_seconds"] for r in runs]),
            "idle_rss_mib": median([r["idle_memory"]["rss_mib"] for r in runs]),
            "idle_pss_mib": median([r["idle_memory"]["pss_mib"] for r in runs]),
            "loaded_rss_mib": median([r["loaded_memory"]["rss_mib"] for r in runs]),
            "loaded_pss_mib": median([r["loaded_memory"]["pss_mib"] for r in runs]),
            "processes": max(r["loaded_memory"]["processes"] for r in runs),
            "load_average_1min_max": max(max(r["load_average_1min"]) for r in runs),
            "levels": {},
        }
        for c in levels:
            level = [r["levels"][str(c)] for r in runs]
            entry["levels"][str(c)] = {
                metric: median([x[metric] for x in level])
                for metric in ("requests_per_second", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "server_cpu_us_per_request")
                if all(metric in x for x in level)
            } | {"errors": sum(x["errors"] for x in level)}
        out[key] = entry
    return out


def ratios(rounds: list[dict], numerator: str, denominator: str, levels: tuple[int, ...]) -> dict:
    """Per level: median over rounds of numerator/denominator requests/s and p99."""
    out = {}
    both = [r for r in rounds if numerator in r and denominator in r]
    if not both:
        return out
    for c in map(str, levels):
        rps = [r[numerator]["levels"][c]["requests_per_second"] / r[denominator]["levels"][c]["requests_per_second"] for r in both]
        p99 = [r[numerator]["levels"][c]["p99_ms"] / r[denominator]["levels"][c]["p99_ms"] for r in both]
        out[c] = {"throughput_ratio": median(rps), "p99_ratio": median(p99), "per_round_throughput_ratio": [round(x, 3) for x in rps]}
        cpu = [r[numerator]["levels"][c].get("server_cpu_us_per_request", 0) / r[denominator]["levels"][c]["server_cpu_us_per_request"]
               for r in both if r[denominator]["levels"][c].get("server_cpu_us_per_request")]
        if cpu:
            out[c]["cpu_per_request_ratio"] = median(cpu)
    return out


def targets(result: dict) -> dict:
    s, levels = result["summary"], [str(c) for c in result["settings"]["levels"]]
    on, off = "modelmon", "modelmon_nomon"
    out = {}
    mlservers = [k for k in ("mlserver_default", "mlserver_pw0") if k in s]
    if on in s and mlservers:
        top = str(max(result["settings"]["levels"]))
        vs = {k: result["ratios"][f"{on}/{k}"] for k in mlservers}
        worst = min(vs[k][top]["throughput_ratio"] for k in mlservers)
        out["throughput_3x_mlserver_at_32"] = {
            "target": ">= 3.0", "measured": {k: vs[k][top]["throughput_ratio"] for k in mlservers}, "met": worst >= 3.0}
        p99 = {k: {c: vs[k][c]["p99_ratio"] for c in levels} for k in mlservers}
        out["p99_below_mlserver_every_level"] = {
            "target": "< 1.0 at every level", "measured": p99,
            "met": all(v < 1.0 for per in p99.values() for v in per.values())}
        rss = {k: s[k]["loaded_rss_mib"] for k in [on, *mlservers]}
        pss = {k: s[k]["loaded_pss_mib"] for k in [on, *mlservers]}
        out["memory_below_mlserver"] = {
            "target": "modelmon's loaded RSS below every MLServer configuration's", "measured_rss_mib": rss,
            "measured_pss_mib": pss, "met": all(rss[on] < rss[k] for k in mlservers)}
    if on in s and off in s:
        per = {c: result["ratios"][f"{on}/{off}"][c]["throughput_ratio"] for c in levels}
        out["monitoring_keeps_90pct"] = {"target": ">= 0.9 at every level", "measured": per,
                                         "met": all(v >= 0.9 for v in per.values())}
    if on in s and "ceiling" in s:
        per = {c: result["ratios"][f"{on}/ceiling"][c]["throughput_ratio"] for c in levels}
        ends = [levels[0], levels[-1]]
        out["half_the_ceiling"] = {"target": f">= 0.5 at c={ends[0]} and c={ends[-1]}", "measured": per,
                                   "met": all(per[c] >= 0.5 for c in ends)}
    if on in s:
        out["ready_under_2s"] = {"target": "< 2.0 s", "measured": s[on]["ready_seconds"], "met": s[on]["ready_seconds"] < 2.0}
    return out


# -- README ---------------------------------------------------------------------------


def markdown(result: dict) -> str:
    s, st = result["summary"], result["settings"]
    levels = [str(c) for c in st["levels"]]
    v = result["versions"]
    lines = [
        "## Serving (`serving.py`)",
        "",
        f"scikit-learn `LogisticRegression(max_iter=10000)` on `load_breast_cancer()` (30 features), one row per "
        f"request, V2 JSON (BentoML: its JSON `{{\"input\": [[...]]}}`). `wrk` {v['wrk']}, one thread, "
        f"concurrency {', '.join(levels)}, {st['duration_seconds']:g} s each after a {st['warmup_seconds']:g} s warm-up, "
        f"{st['rounds']} rounds. Each round starts every server afresh (one at a time: the start-up time is each "
        f"one's alone), then at each concurrency loads them one after another, so that compared servers meet the "
        f"same background load; medians over rounds, ratios taken within a round. {result['machine']['cpus']} cores, shared with the load generator and with whatever else ran on the "
        f"machine: the 1-minute load average went from {result['load_average_1min'][0]:.1f} to "
        f"{result['load_average_1min'][1]:.1f} during the run (each run's is in the JSON). Run on {result['date']} "
        f"with `{st['command']}` ({result['seconds'] / 60:.0f} minutes).",
        "",
        "| server | c | requests/s | p50 ms | p90 ms | p99 ms | server CPU µs / request | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, entry in s.items():
        if key in EXTRA_KEYS:
            continue
        for c in levels:
            x = entry["levels"][c]
            cpu = f"{x['server_cpu_us_per_request']:.0f}" if "server_cpu_us_per_request" in x else "-"
            lines.append(f"| {result['labels'][key]} | {c} | {x['requests_per_second']:,.0f} | {x['p50_ms']:.2f} | "
                         f"{x['p90_ms']:.2f} | {x['p99_ms']:.2f} | {cpu} | {x['errors']} |")
    lines += ["", "| server | ready s (median; round 1) | first answer s | RSS idle MiB | RSS loaded MiB | PSS loaded MiB | processes |",
              "|---|---|---|---|---|---|---|"]
    for key, entry in s.items():
        lines.append(f"| {result['labels'][key]} | {entry['ready_seconds']:.2f}; {entry['ready_seconds_first_round']:.2f} | {entry['first_answer_seconds']:.2f} | "
                     f"{entry['idle_rss_mib']:.0f} | {entry['loaded_rss_mib']:.0f} | {entry['loaded_pss_mib']:.0f} | "
                     f"{entry['processes']} |")
    lines += ["", "Ratios (median over rounds of the within-round ratio; throughput: higher is better for the "
              "numerator, p99: lower is better; the ceiling is the bare ASGI app of `ceiling.py`, same HTTP stack, "
              "fixed answer):", "",
              "| ratio | " + " | ".join(f"c={c} requests/s | c={c} p99" for c in levels) + " |",
              "|---|" + "---|---|" * len(levels)]
    for name, per in result["ratios"].items():
        if any(k in EXTRA_KEYS for k in name.split("/")):
            continue
        a, b = name.split("/")
        cells = " | ".join(f"{per[c]['throughput_ratio']:.2f}x | {per[c]['p99_ratio']:.2f}x" for c in levels)
        lines.append(f"| {result['labels'][a]} / {result['labels'][b]} | {cells} |")
    lines += ["", "Targets (issues 8 and 21):", ""]
    names = {"throughput_3x_mlserver_at_32": "everything on >= 3x MLServer's requests/s at c=32 (both MLServer setups)",
             "p99_below_mlserver_every_level": "p99 below MLServer's at every concurrency (both setups)",
             "monitoring_keeps_90pct": "everything on >= 90% of everything off (`--no-monitoring --no-prediction-log`), every concurrency",
             "ready_under_2s": "ready in under 2 s with one model",
             "half_the_ceiling": "everything on >= 0.5x the ceiling's requests/s at c=1 and c=32 (issue 21)",
             "memory_below_mlserver": "resident memory (RSS of the process tree, under load) below MLServer's"}
    for key, t in result["targets"].items():
        measured = t.get("measured", t.get("measured_rss_mib"))
        lines.append(f"- {names[key]}: **{'met' if t['met'] else 'NOT met'}** (measured: `{json.dumps(measured)}`)")
    if result.get("batching"):
        b = result["batching"]
        lines += ["", "### Batching study and the cost of monitoring", "",
                  f"modelmon, everything on, {b['rows']}-row requests, adaptive batching on (default: "
                  f"`--max-batch-size 256 --max-batch-delay-ms 0`) and off (`--no-batching`), and one-row requests "
                  f"with batching off; {b['duration_seconds']:g} s per level, in the same rounds (one-row requests "
                  f"with batching on are the first table).", "",
                  "| setup | c | requests/s | rows/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|"]
        for key in EXTRA_KEYS:
            if key not in s:
                continue
            rows = 64 if key.startswith("batch64") or key == "ceiling64" else 1
            for c in (str(x) for x in b["levels"]):
                x = s[key]["levels"][c]
                lines.append(f"| {result['labels'][key]} | {c} | {x['requests_per_second']:,.0f} | "
                             f"{x['requests_per_second'] * rows:,.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} |")
        lines += ["", "| ratio | " + " | ".join(f"c={c} requests/s | c={c} p99" for c in b["levels"]) + " |",
                  "|---|" + "---|---|" * len(b["levels"])]
        for name, per in result["ratios"].items():
            if not any(k in EXTRA_KEYS for k in name.split("/")) or not per:
                continue
            a, bb = name.split("/")
            cells = " | ".join(f"{per[str(c)]['throughput_ratio']:.2f}x | {per[str(c)]['p99_ratio']:.2f}x" for c in b["levels"])
            lines.append(f"| {result['labels'][a]} / {result['labels'][bb]} | {cells} |")
    return finish_markdown(lines, result, notes=True)


def write_readme_section(marker: str, text: str) -> None:
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    current = README.read_text()
    block = f"{begin}\n{text}{end}\n\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        current = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        current = current.rstrip("\n") + "\n\n" + block
    README.write_text(current)


# -- main -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds: 2 s per level, 1 round, no venv building")
    parser.add_argument("--peers", default=None, help="all (build missing venvs), installed, or none [default: all; --quick: installed]")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None, help="seconds per concurrency level")
    parser.add_argument("--batch-duration", type=float, default=None, help="seconds per level in the batching study")
    parser.add_argument("--no-batching-study", action="store_true")
    parser.add_argument("--trees", default=",".join(TREE_FRAMEWORKS),
                        help="the tree study's frameworks, comma-separated, or none [default: xgboost,lightgbm]")
    parser.add_argument("--trees-only", action="store_true",
                        help=f"only the tree study; writes {TREE_RESULTS.relative_to(ROOT)} and its README section")
    parser.add_argument("--regression-only", action="store_true",
                        help=f"only a regressor, everything on vs monitoring off; writes {REGRESSION_RESULTS.relative_to(ROOT)}")
    parser.add_argument("--shadow-only", action="store_true",
                        help=f"only modelmon with and without a shadow rollout; writes {SHADOW_RESULTS.relative_to(ROOT)}")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="also serve with the code of git revision REV (a worktree), everything on, side by side")
    parser.add_argument("--no-ceiling", action="store_true", help="without the bare ASGI app's reference row")
    parser.add_argument("--out", type=Path, default=None, help=f"[default: {RESULTS.relative_to(ROOT)}]")
    parser.add_argument("--readme", action=argparse.BooleanOptionalAction, default=None,
                        help="write the README section [default: on for full runs to the default --out]")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    quick = args.quick
    rounds = args.rounds or (1 if quick else 3)
    duration = args.duration or (2.0 if quick else 15.0)
    batch_duration = args.batch_duration or (2.0 if quick else 4.0)
    warmup = 0.5 if quick else 2.0
    peers_mode = args.peers or ("installed" if quick else "all")
    trees_only = args.trees_only
    regression_only = args.regression_only
    shadow_only = args.shadow_only
    if regression_only or shadow_only:  # a short run: issue 18's on/off ratio, or issue 19's shadow/none
        duration = args.duration or (2.0 if quick else 10.0)
        peers_mode, args.trees, args.no_batching_study, args.no_ceiling = "none", "none", True, True
    default_out = (REGRESSION_RESULTS if regression_only else SHADOW_RESULTS if shadow_only
                   else TREE_RESULTS if trees_only else RESULTS)
    out_path = args.out or default_out
    write_readme = args.readme if args.readme is not None else (not quick and out_path == default_out)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    frame = cancer_frame()
    ROWS[:] = frame.drop(columns="target").to_numpy().tolist()[:64]
    if regression_only:
        ROWS[:] = regression_frames()[1].drop(columns="target").to_numpy().tolist()[:64]

    frameworks = tree_frameworks(args.trees)
    if trees_only and not frameworks:
        sys.exit("--trees-only: no tree framework installed (pip install 'modelmon[xgboost,lightgbm]')")
    peer_names = [*([] if trees_only else ["mlserver", "bentoml"]), *([TREE_PEER] if frameworks else [])]
    wanted_peers = {"none": [], "installed": [p for p in peer_names if venvs.installed(p)],
                    "all": peer_names}[peers_mode]
    available = [p for p in wanted_peers if venvs.ensure(p, log=lambda m: print(m, file=sys.stderr))]
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="modelmon-bench-serving-"))
    try:
        registry = (workdir / "registry" if trees_only else prepare_regression(workdir) if regression_only
                    else prepare_modelmon(workdir, versions=2 if shadow_only else 1))
        if shadow_only:
            prepare_shadow(registry)
        trees = prepare_trees(workdir, registry, frameworks)
        baseline = baseline_source(args.baseline, workdir) if args.baseline else None

        def factories() -> dict[str, object]:
            if trees_only:
                return {}
            if shadow_only:
                return {key: lambda key=key: shadow_server(key, registry) for key in SHADOW_KEYS}
            if regression_only:
                return {
                    "modelmon": lambda: regression_server("modelmon", "modelmon, everything on", registry, []),
                    "modelmon_nomon": lambda: regression_server("modelmon_nomon", "modelmon, monitoring off", registry,
                                                                NOTHING_ON),
                }
            f = {
                "modelmon": lambda: modelmon_server("modelmon", "modelmon, everything on", registry, []),
                "modelmon_nomon": lambda: modelmon_server("modelmon_nomon", "modelmon, everything off", registry, NOTHING_ON),
                "modelmon_nolog": lambda: modelmon_server("modelmon_nolog", "modelmon, metrics + drift, --no-prediction-log",
                                                          registry, ["--no-prediction-log"]),
            }
            if quick:
                f.pop("modelmon_nolog")
            if not args.no_ceiling:
                f["ceiling"] = ceiling_server
            if baseline is not None:
                f["modelmon_baseline"] = lambda: modelmon_server(
                    "modelmon_baseline", f"modelmon at {args.baseline}, everything on", registry, [], baseline)
            if "mlserver" in available:
                f["mlserver_pw0"] = lambda: mlserver_server("mlserver_pw0", "MLServer parallel_workers=0", workdir, 0)
                f["mlserver_default"] = lambda: mlserver_server("mlserver_default", "MLServer default (parallel_workers=1)", workdir, None)
            if "bentoml" in available:
                f["bentoml"] = lambda: bentoml_server(workdir)
            return f

        batch = {} if args.no_batching_study or trees_only else {
            "batch64_on": (lambda: modelmon_server("batch64_on", "modelmon 64 rows, batching on", registry, []), 64),
            "batch64_off": (lambda: modelmon_server("batch64_off", "modelmon 64 rows, --no-batching", registry, ["--no-batching"]), 64),
            "batch1_off": (lambda: modelmon_server("batch1_off", "modelmon 1 row, --no-batching", registry, ["--no-batching"]), 1),
        }
        if batch and not args.no_ceiling:
            batch["ceiling64"] = (lambda: ceiling_server("ceiling64", "ceiling, 64-row requests"), 64)
        batch_levels = (32,) if quick else (1, 32)
        if quick:
            batch.pop("batch1_off", None)
        labels, commands, all_rounds, failures = {}, {}, [], []
        copies: dict[str, float] = {}  # the shadow case's counters, of the last round that ran
        tree_keys: dict[str, None] = {}  # in order of first appearance
        for r in range(rounds):
            this_round = {}
            keys = list(factories())
            keys = keys[r % len(keys):] + keys[: r % len(keys)] if keys else []  # rotate the order each round
            main_group = {key: (factories()[key](), 1) for key in keys}
            extra_group = {key: (factory(), rows) for key, (factory, rows) in batch.items()}
            for key, (server, _) in {**main_group, **extra_group}.items():
                labels[key], commands[key] = server.label, " ".join(server.command)
            if main_group:
                print(f"round {r + 1}/{rounds}: {', '.join(labels[k] for k in main_group)}", file=sys.stderr, flush=True)
                try:
                    this_round |= measure_group(main_group, workdir, LEVELS, duration, warmup)
                except (RuntimeError, TimeoutError, OSError) as exc:  # recorded; the other rounds still count
                    failures.append(f"round {r + 1}: {exc}")
                    print(f"  failed: {exc}", file=sys.stderr, flush=True)
                    continue
            if "modelmon_shadow" in main_group:
                copies = main_group["modelmon_shadow"][0].copies
                print(f"  shadow copies: {copies}", file=sys.stderr, flush=True)
            for key in main_group:
                line = ", ".join(f"c={c}: {x['requests_per_second']:.0f}/s p99 {x['p99_ms']:.1f} ms"
                                 for c, x in this_round[key]["levels"].items())
                print(f"  {labels[key]}: ready {this_round[key]['ready_seconds']:.2f} s; {line}", file=sys.stderr, flush=True)
            if extra_group:
                print(f"round {r + 1}/{rounds}: batching study", file=sys.stderr, flush=True)
                try:
                    this_round |= measure_group(extra_group, workdir, batch_levels, batch_duration, warmup / 2)
                except (RuntimeError, TimeoutError, OSError) as exc:
                    failures.append(f"round {r + 1}, batching study: {exc}")
                    print(f"  failed: {exc}", file=sys.stderr, flush=True)
            shift = r % len(frameworks) if frameworks else 0
            for framework in frameworks[shift:] + frameworks[:shift]:  # the order rotated each round
                group = tree_group(framework, registry, trees, workdir, TREE_PEER in available)
                for key, (server, _) in group.items():
                    labels[key], commands[key] = server.label, " ".join(server.command)
                    tree_keys.setdefault(key, None)
                print(f"round {r + 1}/{rounds}: {TREE_NAMES[framework]}", file=sys.stderr, flush=True)
                try:
                    measured = measure_group(group, workdir, LEVELS, duration, warmup)
                except (RuntimeError, TimeoutError, OSError) as exc:
                    failures.append(f"round {r + 1}, {TREE_NAMES[framework]}: {exc}")
                    print(f"  failed: {exc}", file=sys.stderr, flush=True)
                    continue
                this_round |= measured
                for key, entry in measured.items():
                    line = ", ".join(f"c={c}: {x['requests_per_second']:.0f}/s p99 {x['p99_ms']:.1f} ms"
                                     for c, x in entry["levels"].items())
                    print(f"  {labels[key]}: {line}", file=sys.stderr, flush=True)
            all_rounds.append(this_round)
        if not any(r for r in all_rounds) or not (trees_only or any("modelmon" in r for r in all_rounds)):
            sys.exit("no round completed: " + "; ".join(failures))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if args.baseline:
            subprocess.run(["git", "worktree", "prune"], cwd=ROOT, check=False)

    keys = [k for k in labels if k not in tree_keys]
    extra = [k for k in keys if k in batch]
    summary = summarise(all_rounds, [k for k in keys if k not in extra], LEVELS)
    summary |= summarise(all_rounds, extra, batch_levels)
    ratio_pairs = [("modelmon", "modelmon_nomon"), ("modelmon", "modelmon_nolog"), ("modelmon_nolog", "modelmon_nomon"),
                   ("modelmon", "modelmon_baseline"), ("modelmon", "ceiling"), ("modelmon_nomon", "ceiling"),
                   ("modelmon_baseline", "ceiling"), ("modelmon_shadow", "modelmon")]
    ratio_pairs += [(a, b) for a in ("modelmon", "modelmon_nomon") for b in ("mlserver_default", "mlserver_pw0", "bentoml")]
    ratio_pairs = [(a, b) for a, b in ratio_pairs if a in summary and b in summary]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - started, 1),
        "settings": {"rounds": rounds, "duration_seconds": duration, "warmup_seconds": warmup, "levels": list(LEVELS),
                     "quick": quick, "command": "python benchmarks/serving.py" + (" --quick" if quick else "")
                     + (" --trees-only" if trees_only else "") + (" --regression-only" if regression_only else "")
                     + (" --shadow-only" if shadow_only else "")
                     + (f" --rounds {args.rounds}" if args.rounds else "") + (f" --duration {args.duration:g}" if args.duration else "")
                     + (f" --batch-duration {args.batch_duration:g}" if args.batch_duration else "")},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average_1min": [min(min(x["load_average_1min"]) for r in all_rounds for x in r.values() if x),
                              max(max(x["load_average_1min"]) for r in all_rounds for x in r.values() if x)],
        "versions": versions(available, frameworks),
        "labels": labels,
        "commands": commands,
        "summary": summary,
        "ratios": {f"{a}/{b}": ratios(all_rounds, a, b, LEVELS) for a, b in ratio_pairs},
        "rounds": all_rounds,
        "failures": failures,
        "notes": [
            "- modelmon serves the ONNX copy it makes at registration (proven to agree within 1e-4); MLServer and "
            "BentoML call scikit-learn's `predict_proba` (MLServer asked for the `predict_proba` output).",
            "- \"Everything on\" is `modelmon serve`'s defaults: serving and prediction metrics, drift accounting "
            "against the reference profile (the model is registered with `--reference` and `--validation`, so the "
            "profile and the calibration exist) with the drift scorer's background timer, and the prediction log "
            "writing every prediction to the default SQLite store under MODELMON_HOME. \"Everything off\" is "
            "`--no-monitoring --no-prediction-log`. Each modelmon setup keeps its MODELMON_HOME across rounds, so "
            "round 1 starts on a new store and later rounds restart on it (the ready time is the median).",
            "- Memory: RSS summed over the server's process tree (the largest seen while under load), and PSS, "
            "which counts shared pages once: MLServer's default mode runs a separate worker process and "
            "BentoML a supervisor and a worker, where the RSS sum counts shared libraries twice. modelmon's tree "
            "holds the server and, with the prediction log on, its writer process.",
            "- After each load, the next server starts only once the last one's process tree is idle (its "
            "`settle_seconds` in the results, under a second for every server: a backlog or a writer catching "
            "up would otherwise spill into the next measurement), and the order of the servers is rotated per "
            "level and reversed on every other level, so no server always runs right after the same one. With a "
            "rotation alone, modelmon with everything on ran right after BentoML in 8 of the 9 runs of one "
            "benchmark run; its on / off ratios were 0.98 at c=1 in the one run where it went first and 0.81-0.86 "
            "in the others, while side-by-side runs of only the two gave 0.92 at c=1 and about 1.0 at c=8. The "
            "cause was not found (BentoML's own tail work after a load is under 0.2 s of CPU).",
        ],
    }
    if batch:
        result["batching"] = {"rows": 64, "levels": list(batch_levels), "duration_seconds": batch_duration}
        result["ratios"]["batch64_on/batch64_off"] = ratios(all_rounds, "batch64_on", "batch64_off", batch_levels)
        result["ratios"]["modelmon/batch1_off"] = ratios(all_rounds, "modelmon", "batch1_off", batch_levels)
        if "ceiling64" in batch:  # issue 21: "also report the same for 64-row requests"
            result["ratios"]["batch64_on/ceiling64"] = ratios(all_rounds, "batch64_on", "ceiling64", batch_levels)

    result["targets"] = {} if shadow_only else targets(result)
    if shadow_only:
        result["ratios"]["modelmon_shadow/modelmon"] = shadow_ratios(all_rounds, LEVELS)
        result["shadow_copies_last_round"] = copies
    if frameworks:
        tree_summary = summarise(all_rounds, list(tree_keys), LEVELS)
        tree_pairs = [(f"{f}_{a}", f"{f}_{b}") for f in frameworks for a in ("modelmon", "modelmon_native")
                      for b in ("mlserver_default", "mlserver_pw0")]
        tree_pairs += [(f"{f}_modelmon", f"{f}_modelmon_native") for f in frameworks]
        tree_ratios = {f"{a}/{b}": ratios(all_rounds, a, b, LEVELS) for a, b in tree_pairs
                       if a in tree_summary and b in tree_summary}
        result["trees"] = {"models": trees, "summary": tree_summary, "ratios": tree_ratios,
                           "targets": tree_targets(tree_summary, tree_ratios, frameworks, LEVELS)}
    if trees_only or regression_only or shadow_only:  # the main study's notes are about its servers
        result["notes"] = []
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    if trees_only:
        text = trees_only_markdown(result)
    elif regression_only:
        text = regression_markdown(result)
    elif shadow_only:
        text = shadow_markdown(result)
    else:
        text = markdown(result)
        if "trees" in result:
            text = text.rstrip("\n") + "\n" + "\n".join(tree_markdown(result)) + "\n"
    if write_readme:
        write_readme_section("serving-trees" if trees_only else "serving-regression" if regression_only
                             else "serving-shadow" if shadow_only else "serving", text)
    print(text)


def distribution_version(name: str) -> str | None:
    import importlib.metadata as metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions(peers: list[str], frameworks: tuple[str, ...] | list[str] = ()) -> dict[str, str | None]:
    import importlib.metadata as metadata

    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    match = re.search(r"wrk (\S+)", wrk_version.stdout + wrk_version.stderr)
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "../src"], capture_output=True, text=True, cwd=HERE)
    out = {"modelmon": f"{metadata.version('modelmon')} ({git.stdout.strip()}{', src with uncommitted changes' if dirty.stdout.strip() else ''})",
           "scikit-learn (modelmon)": metadata.version("scikit-learn"),
           "onnxruntime": metadata.version("onnxruntime"), "starlette": metadata.version("starlette"),
           "uvicorn": metadata.version("uvicorn"), "wrk": match.group(1) if match else None}
    if "mlserver" in peers:
        out |= {"mlserver": venvs.version("mlserver", "mlserver"),
                "mlserver-sklearn": venvs.version("mlserver", "mlserver-sklearn"),
                "uvloop (MLServer)": venvs.version("mlserver", "uvloop"),
                "scikit-learn (MLServer)": venvs.version("mlserver", "scikit-learn")}
    for framework in frameworks:  # xgboost-cpu and xgboost are one module
        out[f"{framework} (modelmon)"] = next(
            (version for d in (framework, f"{framework}-cpu") if (version := distribution_version(d))), None)
    if frameworks:
        out["onnxmltools"] = metadata.version("onnxmltools")
    if TREE_PEER in peers:
        out |= {"mlserver (trees)": venvs.version(TREE_PEER, "mlserver"),
                "mlserver-xgboost": venvs.version(TREE_PEER, "mlserver-xgboost"),
                "mlserver-lightgbm": venvs.version(TREE_PEER, "mlserver-lightgbm"),
                "xgboost (MLServer)": venvs.version(TREE_PEER, "xgboost-cpu"),
                "lightgbm (MLServer)": venvs.version(TREE_PEER, "lightgbm"),
                "uvloop (MLServer trees)": venvs.version(TREE_PEER, "uvloop")}
    if "bentoml" in peers:
        out |= {"bentoml": venvs.version("bentoml", "bentoml"),
                "scikit-learn (BentoML)": venvs.version("bentoml", "scikit-learn")}
    return out


if __name__ == "__main__":
    main()
