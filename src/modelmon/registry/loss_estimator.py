"""A regression model's expected error per row, before any label arrives (direct loss estimation).

At registration a small model learns, on the validation rows, each row's absolute error and
squared error from its features and the model's prediction (NannyML's Direct Loss Estimation
does the same with LightGBM). At serving, the monitor adds each row's expected |error| and
error**2 to counters, so the estimated MAE of any window and any set of replicas is a ratio of
sums in PromQL and the estimated RMSE the square root of one (docs/regression-estimate.md).

How it is fitted (scikit-learn, at registration only):

- inputs: the numeric features, each categorical feature as the code of its level (levels
  seen in the validation rows, most frequent first, at most ``MAX_LEVELS``; other levels and
  missing values are missing) and the prediction; missing values are the trees' own;
- two ``HistGradientBoostingRegressor`` with the Poisson loss (a log link: the estimate is
  positive, and its mean matches the target's), one for |error|, one for error**2,
  categorical features split natively;
- calibration: five-fold cross-fitting gives every validation row an estimate from models
  that did not see it; the final models (fitted on all rows) are scaled so that the mean
  out-of-fold estimate equals the mean realized error. Without it the estimate would be
  judged on its own training rows.

How it is served (``modelmon serve`` imports neither scikit-learn nor pandas): the trees are
copied into flat arrays, and from them into one ONNX TreeEnsembleRegressor per estimate (float64
thresholds), run by onnxruntime for a whole batch at once; ``save`` writes both into one
``.npz`` (no pickle). At fit, both the ONNX graph and a plain numpy walk of the arrays are
checked against scikit-learn's own prediction on the fit rows (within 1e-5, relative).

Beyond ``MAX_FIT_ROWS`` validation rows the trees are fitted on a seeded sample of them.

Fallback: with fewer than ``MIN_ROWS`` rows, or when every row has the same error (a constant
target predicted exactly), the estimate is the constant reference error (the validation
rows' mean |error| and mean error**2) for every row, and ``kind`` says ``"constant"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelmon.errors import RegistryError
from modelmon.types import FeatureBatch, Signature

FILE = "loss_estimator.npz"
#: Below this many validation rows the estimate is the constant reference error.
MIN_ROWS = 200
#: Above this many validation rows the trees are fitted on a seeded sample of them (the
#: reference error still uses every row). 60,000 rows took 42 s to register on the loaded
#: benchmark machine, estimator included (benchmarks/dle.py, car price).
MAX_FIT_ROWS = 200_000
#: Categorical levels given their own code (HistGradientBoosting allows at most 255).
MAX_LEVELS = 250
FOLDS = 5
#: The numpy walk must reproduce scikit-learn's prediction to this relative tolerance.
AGREEMENT = 1e-5
#: Small trees: the estimate is served for every row, and validation sets are small. 50
#: trees at a learning rate of 0.16, not 100 at 0.08: half the serving cost per row, which is
#: onnxruntime walking the trees (on benchmarks/serving.py's regressor at concurrency 32, the
#: estimate was 4 points of its everything-on throughput), still better than NannyML's DLE
#: on every case of benchmarks/dle.py (per-window error of the estimated MAE on the
#: generated shift case 0.031 against 0.036 before, on the car prices 8.06 against 7.98,
#: 1% worse; DLE 0.040 and 9.01; of the RMSE 0.042 against 0.044 and 8.12 against 8.86).
#: Both judged cases fit on large validation sets (10,000 and 60,000 rows); with a few
#: hundred rows, fewer trees at a higher rate may fit the noise sooner: not measured.
BOOSTING = {
    "loss": "poisson", "max_iter": 50, "learning_rate": 0.16, "max_depth": 5, "max_leaf_nodes": 15,
    "min_samples_leaf": 40, "l2_regularization": 1.0, "early_stopping": False, "random_state": 0,
}


_TREE_ARRAYS = ("feature", "threshold", "children", "value", "roots", "cat_lut")


@dataclass
class _Trees:
    """Boosted trees as flat arrays, walked for a whole batch at once.

    The walk reads an augmented row (``_augment``): each numeric feature twice, missing as
    +inf in the first copy and -inf in the second, so a node that sends missing values left
    reads the second copy and every split is ``value > threshold`` goes right; and one column
    per categorical split, 0 (left) or 1 (right) from a lookup table over the level codes.
    Leaves are their own children, so ``depth`` steps from every root end on a leaf."""

    feature: np.ndarray  # int32 [nodes]: column of the augmented row
    threshold: np.ndarray  # float64 [nodes]
    children: np.ndarray  # int32 [2 * nodes]: left, right
    value: np.ndarray  # float64 [nodes]: a leaf's raw value (0 elsewhere)
    roots: np.ndarray  # int32 [trees]
    cat_lut: np.ndarray  # float64 [categorical splits, MAX_LEVELS + 1]: 1 = right; last column: missing
    cat_feature: np.ndarray  # int32 [categorical splits]: which categorical feature
    n_numeric: int
    depth: int
    baseline: float  # raw prediction before the trees
    log_scale: float = 0.0  # calibration, added to the raw prediction
    onnx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))  # the same trees as ONNX
    _session: Any = field(default=None, repr=False)

    @classmethod
    def from_sklearn(cls, model: Any, n_categorical: int, n_numeric: int) -> _Trees:
        """From a fitted HistGradientBoostingRegressor on ``_encode``'s matrix: categorical
        columns first (scikit-learn's own order, see ``_encode``), then numeric ones."""
        feature: list[int] = []
        threshold: list[float] = []
        children: list[int] = []
        value: list[float] = []
        roots: list[int] = []
        luts: list[np.ndarray] = []
        cat_feature: list[int] = []
        offset, depth = 0, 0
        n_plain = n_numeric + 1  # the numeric features and the prediction
        for (predictor,) in model._predictors:
            nodes = predictor.nodes
            bitsets = np.asarray(predictor.raw_left_cat_bitsets, dtype=np.uint32).reshape(-1, 8)
            for i, node in enumerate(nodes):
                index = offset + i
                if node["is_leaf"]:
                    feature.append(0)
                    threshold.append(np.inf)
                    children += [index, index]
                    value.append(float(node["value"]))
                    continue
                f = int(node["feature_idx"])
                if node["is_categorical"]:
                    codes = np.arange(MAX_LEVELS)
                    words = bitsets[int(node["bitset_idx"])][codes >> 5]
                    goes_left = ((words >> (codes & 31).astype(np.uint32)) & 1).astype(bool)
                    lut = np.append(~goes_left, not node["missing_go_to_left"]).astype(np.float64)
                    feature.append(2 * n_plain + len(luts))
                    luts.append(lut)
                    cat_feature.append(f)
                    threshold.append(0.5)
                else:
                    column = f - n_categorical
                    feature.append(column + (n_plain if node["missing_go_to_left"] else 0))
                    # A split at +inf sends every value left and missing (+inf here) right.
                    threshold.append(min(float(node["num_threshold"]), float(np.finfo(np.float64).max)))
                children += [offset + int(node["left"]), offset + int(node["right"])]
                value.append(0.0)
            roots.append(offset)
            offset += len(nodes)
            depth = max(depth, int(nodes["depth"].max()))
        return cls(feature=np.asarray(feature, np.int32), threshold=np.asarray(threshold, np.float64),
                   children=np.asarray(children, np.int32), value=np.asarray(value, np.float64),
                   roots=np.asarray(roots, np.int32),
                   cat_lut=np.asarray(luts, np.float64).reshape(-1, MAX_LEVELS + 1),
                   cat_feature=np.asarray(cat_feature, np.int32), n_numeric=n_numeric, depth=depth,
                   baseline=float(np.ravel(model._baseline_prediction)[0]))

    def _augment(self, codes: np.ndarray, plain: np.ndarray) -> np.ndarray:
        """The augmented rows (see the class) from level codes [N, k] (MAX_LEVELS: missing)
        and the numeric features and prediction [N, n_numeric + 1] (NaN: missing).

        Written in place into one array, missing values patched only when there are some:
        40-110 µs for 1,050 rows of 31 columns against 600-710 with a ``np.where`` per copy
        and their concatenation (issue 18, CPU time on a shared 2-core machine)."""
        n, width = plain.shape
        out = np.empty((n, 2 * width + self.cat_feature.size))
        out[:, :width] = plain
        out[:, width : 2 * width] = plain
        missing = np.isnan(plain)
        if missing.any():
            out[:, :width][missing] = np.inf
            out[:, width : 2 * width][missing] = -np.inf
        if self.cat_feature.size:
            out[:, 2 * width :] = self.cat_lut[np.arange(self.cat_feature.size), codes[:, self.cat_feature]]
        return out

    def predict(self, codes: np.ndarray, plain: np.ndarray) -> np.ndarray:
        """The estimate, from onnxruntime's TreeEnsembleRegressor on the augmented rows.

        Measured on 1,000-row batches, 100 trees of depth 5 (before ``BOOSTING`` halved them;
        2 cores shared by six busy processes, CPU time): 0.9 µs per row against 10 µs for the
        numpy walk (``walk``, kept to check the graph at fit)."""
        return self.predict_augmented(self._augment(codes, plain))

    def predict_augmented(self, augmented: np.ndarray) -> np.ndarray:
        """``predict`` from rows already augmented (``_augment``)."""
        if self._session is None:
            from modelmon.runtimes.onnx import onnx_session

            self._session = onnx_session(self.onnx.tobytes())
        (summed,) = self._session.run(None, {"X": augmented})
        # Leaf values are summed in float32 by onnxruntime: the baseline is added here in float64.
        return np.exp(self.baseline + self.log_scale + summed[:, 0].astype(np.float64))

    def walk(self, codes: np.ndarray, plain: np.ndarray) -> np.ndarray:
        """The estimate by walking the arrays in numpy (the reference for the ONNX graph)."""
        augmented = self._augment(codes, plain)
        n, width = augmented.shape
        flat = augmented.ravel()
        base = (np.arange(n, dtype=np.int64) * width)[:, None]
        node = np.broadcast_to(self.roots, (n, self.roots.size))
        for _ in range(self.depth):
            right = flat[base + self.feature[node]] > self.threshold[node]
            node = self.children[2 * node + right]
        raw = self.baseline + self.log_scale + self.value[node].sum(axis=1)
        return np.exp(raw)  # the Poisson loss's log link

    def build_onnx(self) -> None:
        """The trees as one ai.onnx.ml TreeEnsembleRegressor on the augmented rows: thresholds
        in float64 (compared in float64, as the walk does), ``x <= threshold`` goes left."""
        from onnx import TensorProto, helper, numpy_helper

        n = self.value.size
        tree = np.searchsorted(self.roots, np.arange(n), side="right") - 1
        local = np.arange(n) - self.roots[tree]
        left, right = self.children[0::2].astype(np.int64), self.children[1::2].astype(np.int64)
        leaf = left == np.arange(n)
        thresholds = np.where(leaf, 0.0, self.threshold)
        node = helper.make_node(
            "TreeEnsembleRegressor", ["X"], ["Y"], domain="ai.onnx.ml", n_targets=1, aggregate_function="SUM",
            nodes_treeids=tree.tolist(), nodes_nodeids=local.tolist(),
            nodes_featureids=np.where(leaf, 0, self.feature).tolist(),
            nodes_values_as_tensor=numpy_helper.from_array(thresholds.astype(np.float64)),
            nodes_modes=["LEAF" if is_leaf else "BRANCH_LEQ" for is_leaf in leaf.tolist()],
            nodes_truenodeids=np.where(leaf, 0, left - self.roots[tree]).tolist(),
            nodes_falsenodeids=np.where(leaf, 0, right - self.roots[tree]).tolist(),
            nodes_missing_value_tracks_true=[0] * n,
            target_treeids=tree[leaf].tolist(), target_nodeids=local[leaf].tolist(), target_ids=[0] * int(leaf.sum()),
            target_weights_as_tensor=numpy_helper.from_array(self.value[leaf].astype(np.float64)),
            base_values_as_tensor=numpy_helper.from_array(np.zeros(1)),
        )
        width = 2 * (self.n_numeric + 1) + self.cat_feature.size
        graph = helper.make_graph([node], "modelmon_loss_estimator",
                                  [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [None, width])],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
        model.ir_version = 8
        self.onnx = np.frombuffer(model.SerializeToString(), dtype=np.uint8).copy()
        self._session = None

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f"{prefix}{k}": getattr(self, k) for k in (*_TREE_ARRAYS, "cat_feature", "onnx")}
        out[f"{prefix}scalars"] = np.array([self.n_numeric, self.depth, self.baseline, self.log_scale])
        return out

    @classmethod
    def from_arrays(cls, data: Any, prefix: str) -> _Trees:
        n_numeric, depth, baseline, log_scale = data[f"{prefix}scalars"].tolist()
        return cls(**{k: data[f"{prefix}{k}"] for k in (*_TREE_ARRAYS, "cat_feature", "onnx")}, n_numeric=int(n_numeric),
                   depth=int(depth), baseline=baseline, log_scale=log_scale)


@dataclass
class LossEstimator:
    """Expected |error| and error**2 of a regression model's prediction, per row."""

    kind: str  # "trees" or "constant"
    levels: list[list[str]]  # per categorical feature, the levels with a code
    reference: tuple[float, float]  # the validation rows' mean |error| and mean error**2
    absolute: _Trees | None = None
    squared: _Trees | None = None
    #: Held-out diagnostics from the cross-fitting (docs/regression-estimate.md).
    diagnostics: dict[str, Any] = field(default_factory=dict)

    # -- fitting -----------------------------------------------------------------------------

    @classmethod
    def fit(cls, features: FeatureBatch, predicted: np.ndarray, target: np.ndarray,
            signature: Signature) -> LossEstimator:
        predicted = np.asarray(predicted, dtype=np.float64).ravel()
        target = np.asarray(target, dtype=np.float64).ravel()
        n = features.n_rows
        if n == 0:
            raise RegistryError("the loss estimator needs validation rows with a target; got none")
        widths = (len(signature.numeric_features), len(signature.categorical_features))
        if (features.numeric.shape[1], features.categorical.shape[1]) != widths:
            raise RegistryError(f"the loss estimator got {features.numeric.shape[1]} numeric and "
                                f"{features.categorical.shape[1]} categorical features; the signature has "
                                f"{widths[0]} and {widths[1]}")
        if predicted.size != n or target.size != n:
            raise RegistryError(f"the loss estimator got {n} rows of features, {predicted.size} predictions "
                                f"and {target.size} targets")
        for name, values in (("prediction", predicted), ("target", target)):
            if not np.isfinite(values).all():
                raise RegistryError(f"the loss estimator needs a finite {name} on every validation row "
                                    f"({int((~np.isfinite(values)).sum())} are not)")
        error = predicted - target
        abs_error, sq_error = np.abs(error), error**2
        reference = (float(abs_error.mean()), float(sq_error.mean()))
        if n > MAX_FIT_ROWS:  # a seeded sample: the fit's cost grows with the rows
            keep = np.sort(np.random.default_rng(0).choice(n, MAX_FIT_ROWS, replace=False))
            features = FeatureBatch(numeric=features.numeric[keep], categorical=features.categorical[keep])
            predicted, abs_error, sq_error, n = predicted[keep], abs_error[keep], sq_error[keep], MAX_FIT_ROWS
        # Levels from the rows the trees are fitted on: a level they never saw is missing.
        levels = [_levels(features.categorical[:, j]) for j in range(features.categorical.shape[1])]
        if n < MIN_ROWS or np.ptp(abs_error) == 0.0:
            reason = f"{n} rows (fewer than {MIN_ROWS})" if n < MIN_ROWS else "every row has the same error"
            return cls(kind="constant", levels=levels, reference=reference, diagnostics={"reason": reason, "rows": n})

        import sklearn.ensemble  # noqa: F401  (loads OpenMP, so that the limit below applies to it)
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        # One OpenMP thread: on a busy 2-core machine its spinning threads made each fit 3 times
        # slower in CPU time (4.7 s against 1.5 s for 100 trees on 2,000 rows).
        with threadpool_limits(1, user_api="openmp"):
            return cls._fit_trees(features, predicted, abs_error, sq_error, reference, levels)

    @classmethod
    def _fit_trees(cls, features: FeatureBatch, predicted: np.ndarray, abs_error: np.ndarray,
                   sq_error: np.ndarray, reference: tuple[float, float], levels: list[list[str]]) -> LossEstimator:
        n = features.n_rows
        x = _encode(features, predicted, levels)
        categorical = np.zeros(x.shape[1], dtype=bool)
        categorical[: len(levels)] = True
        fitted: dict[str, _Trees] = {}
        diagnostics: dict[str, Any] = {"rows": n, "folds": FOLDS, "reference_mae": reference[0],
                                   "reference_rmse": float(np.sqrt(reference[1]))}
        for name, y in (("absolute", abs_error), ("squared", sq_error)):
            oof = _cross_fit(x, y, categorical)
            model = _boosting(categorical).fit(x, y)
            trees = _Trees.from_sklearn(model, len(levels), features.numeric.shape[1])
            trees.build_onnx()
            expected = model.predict(x)
            worst = {}
            for how, got in (("numpy", trees.walk(*_split(x, len(levels)))), ("onnx", trees.predict(*_split(x, len(levels))))):
                worst[how] = float(np.max(np.abs(got - expected) / np.maximum(np.abs(expected), 1e-12)))
                if worst[how] > AGREEMENT:  # a scikit-learn whose trees this code does not read right
                    raise RegistryError(f"the loss estimator's {how} trees disagree with scikit-learn "
                                        f"(relative {worst[how]:.2e} > {AGREEMENT})")
            # Calibration: the mean held-out estimate equals the mean realized error.
            scale = float(y.mean() / oof.mean()) if oof.mean() > 0 else 1.0
            trees.log_scale = float(np.log(scale))
            fitted[name] = trees
            calibrated = oof * scale
            diagnostics[name] = {
                "calibration_scale": scale, "numpy_vs_sklearn_max_relative": worst["numpy"],
                "onnx_vs_sklearn_max_relative": worst["onnx"],
                # How well the held-out per-row estimate tracks the realized per-row error,
                # against the constant reference error (lower is better).
                "heldout_mae_per_row": float(np.mean(np.abs(calibrated - y))),
                "constant_mae_per_row": float(np.mean(np.abs(y.mean() - y))),
            }
        return cls(kind="trees", levels=levels, reference=reference, absolute=fitted["absolute"],
                   squared=fitted["squared"], diagnostics=diagnostics)

    # -- serving -----------------------------------------------------------------------------

    def expected_errors(self, features: FeatureBatch, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's expected |error| and error**2 (float64 [N] each).

        Cost, CPU time on 1,200-row batches of benchmarks/serving.py's regressor (30 numeric
        features and the prediction; a quiet 2-core machine): 0.66 µs per row with 50 + 50
        trees of depth 5 (0.02 augmenting, 0.31 onnxruntime per model), 1.30 with the 100 +
        100 of before. benchmarks/dle.py measures it on each case (``expected_errors_us_per_row``)."""
        n = features.n_rows
        if self.kind == "constant" or self.absolute is None or self.squared is None:
            return np.full(n, self.reference[0]), np.full(n, self.reference[1])
        x = _encode(features, np.asarray(predicted, dtype=np.float64).ravel(), self.levels)
        codes, plain = _split(x, len(self.levels))
        if self.absolute.cat_feature.size or self.squared.cat_feature.size:
            return self.absolute.predict(codes, plain), self.squared.predict(codes, plain)
        # Without categorical splits both models read the same augmented rows: built once
        # (0.45 µs per row of the 4.6, on 30 numeric features, CPU time).
        augmented = self.absolute._augment(codes, plain)
        return self.absolute.predict_augmented(augmented), self.squared.predict_augmented(augmented)

    # -- storage -----------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        meta = {"kind": self.kind, "levels": self.levels, "reference": list(self.reference),
                "diagnostics": self.diagnostics}
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
        if self.absolute is not None and self.squared is not None:
            arrays |= self.absolute.arrays("absolute_") | self.squared.arrays("squared_")
        with (Path(directory) / FILE).open("wb") as out:
            np.savez(out, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, directory: Path) -> LossEstimator | None:
        path = Path(directory) / FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            trees = ({"absolute": _Trees.from_arrays(data, "absolute_"), "squared": _Trees.from_arrays(data, "squared_")}
                     if meta["kind"] == "trees" else {})
        return cls(kind=meta["kind"], levels=meta["levels"], reference=(meta["reference"][0], meta["reference"][1]),
                   diagnostics=meta["diagnostics"], **trees)


def _levels(column: np.ndarray) -> list[str]:
    """The levels of a categorical column, most frequent first (ties by name), at most MAX_LEVELS."""
    present = [str(v) for v in column.tolist() if v is not None]
    if not present:
        return []
    values, counts = np.unique(np.asarray(present), return_counts=True)
    order = sorted(zip(values.tolist(), counts.tolist(), strict=True), key=lambda vc: (-vc[1], vc[0]))
    return [str(v) for v, _ in order[:MAX_LEVELS]]


def _encode(features: FeatureBatch, predicted: np.ndarray, levels: list[list[str]]) -> np.ndarray:
    """[categorical codes (NaN: missing or unknown), numeric features, prediction] as float64.

    Categorical columns come first and their codes are 0..k-1, all present at fit: scikit-learn
    puts categorical columns first and ordinal-encodes them before its trees, and with this
    layout both steps are the identity, so the trees' feature indices and category bitsets
    read this matrix as they are."""
    n, k = features.n_rows, len(levels)
    x = np.empty((n, k + features.numeric.shape[1] + 1), dtype=np.float64)
    for j, known in enumerate(levels):
        codes = {level: float(i) for i, level in enumerate(known)}
        x[:, j] = [codes.get(v, np.nan) if v is not None else np.nan for v in features.categorical[:, j].tolist()]
    x[:, k:-1] = features.numeric
    x[:, -1] = predicted
    return x


def _split(x: np.ndarray, n_categorical: int) -> tuple[np.ndarray, np.ndarray]:
    """``_encode``'s matrix as the walk reads it: level codes (MAX_LEVELS: missing or unknown)
    and the other columns."""
    codes = x[:, :n_categorical]
    return np.where(np.isnan(codes), MAX_LEVELS, codes).astype(np.intp), x[:, n_categorical:]


def _boosting(categorical: np.ndarray) -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(categorical_features=categorical if categorical.any() else None, **BOOSTING)


def _cross_fit(x: np.ndarray, y: np.ndarray, categorical: np.ndarray) -> np.ndarray:
    """Each row's estimate from a model fitted on the other folds."""
    from sklearn.model_selection import KFold

    oof = np.empty(len(y))
    for fit_rows, held_out in KFold(FOLDS, shuffle=True, random_state=0).split(x):
        if np.ptp(y[fit_rows]) == 0.0:  # nothing to learn on this fold
            oof[held_out] = y[fit_rows].mean()
            continue
        oof[held_out] = _boosting(categorical).fit(x[fit_rows], y[fit_rows]).predict(x[held_out])
    return oof
