"""The peers' venvs: one per peer under ``benchmarks/.peers/`` (git-ignored), each built on
first use with pip from PyPI, with the pins each peer needs on this machine (benchmarks/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / ".peers"

#: name -> pip requirements. The pins are the ones that make each peer work here.
PEERS: dict[str, list[str]] = {
    # uvloop 0.22+ kills MLServer 1.7.1's worker (every request a 404).
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22"],
    # MLServer's XGBoost and LightGBM runtimes (the tree study of serving.py). xgboost-cpu is
    # the `xgboost` module without the CUDA libraries; mlserver-xgboost goes in without its
    # dependencies (NO_DEPS), since it names the `xgboost` distribution, whose wheel pulls NCCL.
    "mlserver-trees": ["mlserver==1.7.1", "mlserver-lightgbm==1.7.1", "uvloop<0.22", "xgboost-cpu",
                       "scikit-learn", "lightgbm"],
    "bentoml": ["bentoml>=1.4,<1.5", "scikit-learn"],
    # Evidently 0.7.23 does not work with pandas 3.
    "evidently": ["evidently==0.7.23", "pandas<3", "pyarrow"],
    # NannyML 0.13.1 imports statsmodels without declaring it.
    "nannyml": ["nannyml==0.13.1", "statsmodels", "pyarrow"],
    # alibi-detect pins numpy<2 itself; pyarrow 21+ needs numpy 2.
    "alibi-detect": ["alibi-detect", "pyarrow<21"],
}

#: name -> requirements installed after PEERS[name] with --no-deps (theirs are in PEERS).
NO_DEPS: dict[str, list[str]] = {"mlserver-trees": ["mlserver-xgboost==1.7.1"]}

#: Environment for every peer process: no telemetry.
PEER_ENV = {"BENTOML_DO_NOT_TRACK": "true", "NML_DISABLE_USAGE_LOGGING": "1", "DO_NOT_TRACK": "1"}


def python(name: str) -> Path:
    return ROOT / name / "bin" / "python"


def installed(name: str) -> bool:
    return (ROOT / name / ".installed").is_file()


def ensure(name: str, log=print) -> Path | None:
    """The peer's python, building its venv first if needed; None if that fails."""
    if installed(name):
        return python(name)
    venv = ROOT / name
    log(f"building the {name} venv in {venv} (pip from PyPI; a few minutes, once)")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python(name)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, *PEERS[name]], check=True, env={**os.environ, **PEER_ENV})
        if name in NO_DEPS:
            subprocess.run([*pip, "--no-deps", *NO_DEPS[name]], check=True, env={**os.environ, **PEER_ENV})
    except (subprocess.CalledProcessError, OSError) as exc:
        log(f"could not build the {name} venv: {exc}")
        return None
    freeze = subprocess.run([str(python(name)), "-m", "pip", "freeze"], capture_output=True, text=True)
    (venv / "requirements.lock").write_text(freeze.stdout)
    (venv / ".installed").write_text(" ".join(PEERS[name] + NO_DEPS.get(name, [])) + "\n")
    return python(name)


def version(name: str, distribution: str) -> str | None:
    """The installed version of ``distribution`` in peer ``name``'s venv."""
    if not installed(name):
        return None
    out = subprocess.run(
        [str(python(name)), "-c", f"import importlib.metadata as m; print(m.version({distribution!r}))"],
        capture_output=True, text=True,
    )
    return out.stdout.strip() or None


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **PEER_ENV, **(extra or {})}


if __name__ == "__main__":
    for peer in sys.argv[1:] or PEERS:
        print(peer, ensure(peer))
