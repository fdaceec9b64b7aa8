"""Prepare a peer server's model directory, inside that peer's venv.

Trains the benchmark model (scikit-learn ``LogisticRegression(max_iter=10000)`` on
``load_breast_cancer()``) with the peer's own scikit-learn, so no pickle crosses versions,
and writes the files the peer serves from:

    python serving_setup.py mlserver DIR --http-port P --grpc-port G --metrics-port M [--parallel-workers N]
    python serving_setup.py bentoml DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import joblib
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression


def train(directory: Path) -> Path:
    X, y = load_breast_cancer(return_X_y=True)
    model = LogisticRegression(max_iter=10000).fit(X, y)
    path = directory / "model.joblib"
    joblib.dump(model, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("peer", choices=["mlserver", "bentoml"])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--grpc-port", type=int)
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--parallel-workers", type=int, default=None, help="omit for MLServer's default")
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    train(args.directory)
    if args.peer == "mlserver":
        settings = {"host": "127.0.0.1", "http_port": args.http_port, "grpc_port": args.grpc_port,
                    "metrics_port": args.metrics_port}
        if args.parallel_workers is not None:
            settings["parallel_workers"] = args.parallel_workers
        (args.directory / "settings.json").write_text(json.dumps(settings))
        model_settings = {"name": "bc", "implementation": "mlserver_sklearn.SKLearnModel",
                          "parameters": {"uri": "./model.joblib", "version": "1"}}
        (args.directory / "model-settings.json").write_text(json.dumps(model_settings))


if __name__ == "__main__":
    main()
