"""The PyTorch runtime (issue 17): TorchScript files and nn.Module objects, their features
and classes, how their outputs are read, safe loading, the missing framework and the ONNX
agreement record. Tiny untrained or briefly trained networks on a few hundred rows."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from modelmon.errors import RegistryError
from modelmon.registry import FeatureBatch, Registry, register_model
from modelmon.runtimes import torch as torch_runtime
from modelmon.runtimes.base import runtime_for_file, runtime_for_object, sha256_of
from modelmon.runtimes.torch import TorchRuntime

#: The tests call torch.jit themselves, to make the files users make.
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")

FEATURES = ["x0", "x1", "x2", "visits"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 200
    data = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(3)})
    data["visits"] = rng.integers(0, 5, n)
    data["label"] = (data.x0 - data.x1 > 0).astype(np.int64)
    return data


def net(inputs: int, outputs: int, *, seed: int = 0, tail: torch.nn.Module | None = None) -> torch.nn.Module:
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(inputs, 8), torch.nn.Tanh(), torch.nn.Linear(8, outputs)]
    return torch.nn.Sequential(*layers, *([tail] if tail is not None else [])).eval()


def scripted_file(model: torch.nn.Module, directory: Path, name: str = "model.pt") -> Path:
    path = directory / name
    torch.jit.save(torch.jit.script(model), str(path))
    return path


def torch_answers(model: torch.nn.Module, frame: pd.DataFrame) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(frame[FEATURES].to_numpy(np.float32))).numpy().astype(np.float64)


def register(model, frame: pd.DataFrame, tmp_path: Path, **kwargs):
    kwargs.setdefault("reference", frame)
    kwargs.setdefault("target", "label")
    return register_model(model, name=kwargs.pop("name", "net"), registry=tmp_path / "registry", **kwargs)


def served(card, tmp_path: Path, frame: pd.DataFrame) -> np.ndarray:
    predictor = Registry(tmp_path / "registry").load_predictor(card)
    output = predictor.predict(FeatureBatch.from_frame(frame, card.signature))
    assert output.probabilities is not None
    return output.probabilities


# -- recognising -------------------------------------------------------------------------


def test_recognises_torch_modules_and_nothing_else(tmp_path):
    from sklearn.linear_model import LogisticRegression

    assert runtime_for_object(net(4, 2)) is TorchRuntime
    assert runtime_for_object(torch.jit.script(net(4, 2))) is TorchRuntime
    assert not TorchRuntime.recognises(LogisticRegression())
    assert not TorchRuntime.recognises(b"onnx bytes")
    # Keras 3 on its torch backend: models and layers are torch Modules, but Keras' own.
    keras_like = type("Functional", (torch.nn.Module,), {"__module__": "keras.src.models.functional"})
    assert not TorchRuntime.recognises(keras_like())
    assert runtime_for_file(scripted_file(net(4, 2), tmp_path)) is TorchRuntime
    assert runtime_for_file(scripted_file(net(4, 2), tmp_path, "model.pth")) is TorchRuntime


# -- features ----------------------------------------------------------------------------


def test_features_are_the_reference_columns_in_order(frame, tmp_path):
    card = register(net(4, 2), frame, tmp_path)
    assert card.signature.feature_names == FEATURES
    assert card.signature.input_layout == "matrix"
    assert [f.dtype for f in card.signature.features] == ["float64", "float64", "float64", "int64"]


def test_features_named_by_the_model(frame, tmp_path):
    """A feature_names attribute (kept by torch.jit.script) orders the features; other
    reference columns are not features."""
    model = net(3, 2)
    model.feature_names = ["visits", "x1", "x0"]
    card = register(model, frame, tmp_path)
    assert card.signature.feature_names == ["visits", "x1", "x0"]
    # Kept in the TorchScript file, and read from it.
    file_card = register(scripted_file(model, tmp_path), frame, tmp_path, name="file")
    assert file_card.signature == card.signature
    # And with no reference data at all.
    bare = register(model, frame, tmp_path, name="bare", reference=None, target=None)
    assert bare.signature.feature_names == ["visits", "x1", "x0"]


def test_a_feature_the_model_names_must_be_in_the_data(frame, tmp_path):
    model = net(3, 2)
    model.feature_names = ["x0", "x1", "tenure"]
    with pytest.raises(RegistryError, match="'tenure'"):
        register(model, frame, tmp_path)


def test_fewer_inputs_than_features_names_the_features_without_one(frame, tmp_path):
    with pytest.raises(RegistryError, match=r"takes 3 input columns.*\['visits'\] have no input"):
        register(net(3, 2), frame, tmp_path)
    # The target left among the features: the error says so.
    with pytest.raises(RegistryError, match=r"\['label'\] have no input.*--target"):
        register(net(4, 2), frame, tmp_path, target=None)


def test_more_inputs_than_features_says_how_many_are_missing(frame, tmp_path):
    with pytest.raises(RegistryError, match=r"takes 6 input columns.*2 feature\(s\) after 'visits'"):
        register(net(6, 2), frame, tmp_path)


def test_text_features_are_refused(frame, tmp_path):
    data = frame.assign(channel=np.where(frame.x2 > 0, "web", "app"))
    with pytest.raises(RegistryError, match=r"text column\(s\) \['channel'\]"):
        register(net(5, 2), data, tmp_path)
    with pytest.raises(RegistryError, match=r"text column\(s\) \['visits'\]"):
        register(net(4, 2), frame, tmp_path, categorical=["visits"])


def test_no_reference_and_no_feature_names_is_refused(tmp_path):
    with pytest.raises(RegistryError, match="records no feature names"):
        register_model(net(4, 2), name="net", registry=tmp_path)


# -- outputs -----------------------------------------------------------------------------


def small_linear(inputs: int) -> torch.nn.Module:
    """One column made by a linear layer, but within [0, 1] on the data: still a logit."""
    layer = torch.nn.Linear(inputs, 1)
    with torch.no_grad():
        layer.weight.fill_(0.01)
        layer.bias.fill_(0.5)
    return layer.eval()


@pytest.mark.parametrize(
    ("make", "form", "to_probabilities"),
    [
        (lambda: net(4, 3), "logits", lambda raw: torch.softmax(torch.tensor(raw), 1).numpy()),
        (lambda: net(4, 3, tail=torch.nn.Softmax(dim=1)), "probabilities", lambda raw: raw),
        (lambda: net(4, 1), "logit", lambda raw: np.hstack([1 - 1 / (1 + np.exp(-raw)), 1 / (1 + np.exp(-raw))])),
        (lambda: net(4, 1, tail=torch.nn.Sigmoid()), "probability", lambda raw: np.hstack([1 - raw, raw])),
        (lambda: small_linear(4), "logit", lambda raw: np.hstack([1 - 1 / (1 + np.exp(-raw)), 1 / (1 + np.exp(-raw))])),
        (
            lambda: net(4, 1, tail=torch.nn.Flatten(0)),
            "logit",
            lambda raw: np.column_stack([1 - 1 / (1 + np.exp(-raw)), 1 / (1 + np.exp(-raw))]),
        ),
    ],
    ids=["logits", "probabilities", "logit", "probability", "logit-in-0-1", "logit-squeezed"],
)
def test_outputs_decided_recorded_and_served(frame, tmp_path, make, form, to_probabilities):
    """Probabilities or logits, decided on the reference rows and stored in the artifact's
    options; the native runtime and the ONNX graph both serve the probabilities."""
    model = make()
    expected = np.asarray(to_probabilities(torch_answers(model, frame)), dtype=np.float64)
    card = register(model, frame, tmp_path, validation=frame)
    assert card.artifact.options["output"] == form, card.artifact.options["output_decided"]
    assert card.signature.classes == list(range(expected.shape[1]))
    assert card.runtime == "onnx", card.onnx_check
    np.testing.assert_allclose(served(card, tmp_path, frame), expected, rtol=0, atol=1e-5)
    native = register(model, frame, tmp_path, name="native", convert_to_onnx=False)
    assert native.runtime == "torch" and native.onnx_check is None
    np.testing.assert_allclose(served(native, tmp_path, frame), expected, rtol=0, atol=1e-6)


def test_served_natively_on_one_thread(frame, tmp_path):
    card = register(net(4, 2), frame, tmp_path, convert_to_onnx=False)
    predictor = Registry(tmp_path / "registry").load_predictor(card)
    assert isinstance(predictor, TorchRuntime)
    assert torch.get_num_threads() == 1


# -- classes -----------------------------------------------------------------------------


def test_classes_from_the_models_attribute(frame, tmp_path):
    model = net(4, 3)
    model.classes = ["low", "mid", "high"]
    card = register(model, frame, tmp_path, target=None, reference=frame.drop(columns="label"))
    assert card.signature.classes == ["low", "mid", "high"]
    assert card.artifact.options["classes_from"] == "the model's classes attribute"
    model.classes = ["low", "high"]
    with pytest.raises(RegistryError, match="names 2 classes but it has 3"):
        register(model, frame, tmp_path, name="wrong")


def test_classes_are_the_sorted_target_labels(frame, tmp_path):
    data = frame.assign(label=np.where(frame.label == 1, "stayed", "churned"))
    card = register(net(4, 1), data, tmp_path, validation=data)
    assert card.signature.classes == ["churned", "stayed"]
    assert card.baseline is not None and card.baseline["rows"] == len(data)
    data3 = frame.assign(label=np.array(["a", "b", "c"])[np.arange(len(frame)) % 3])
    with pytest.raises(RegistryError, match=r"3 labels .* 2 probability columns.*classes attribute"):
        register(net(4, 2), data3, tmp_path, name="three")


def test_a_regression_target_with_several_output_columns_is_refused(frame, tmp_path):
    """One column and such a target is a regressor (the conformance row torch-regression)."""
    with pytest.raises(RegistryError, match="not class labels"):
        register(net(4, 3), frame.assign(label=frame.x0 * 3.3), tmp_path)


# -- nn.Module objects -------------------------------------------------------------------


class Unscriptable(torch.nn.Module):
    """Layers in a Python list: torch.jit.script cannot compile it, tracing can."""

    def __init__(self, branch_on_batch_size: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = torch.nn.Linear(4, 8), torch.nn.Linear(8, 2)
        self.layers = [self.first, torch.tanh, self.second]
        self.branch_on_batch_size = branch_on_batch_size

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        if self.branch_on_batch_size and x.shape[0] > 10:  # data-dependent: tracing fixes it
            x = x * 2
        return x


def test_a_module_is_scripted_else_traced_and_left_as_it_was(frame, tmp_path):
    model = net(4, 2).train()
    before = [p.detach().clone() for p in model.parameters()]
    card = register(model, frame, tmp_path)
    assert card.artifact.options["torchscript"] == "scripted"
    assert model.training, "registration must not leave the user's module in eval mode"
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    traced = register(Unscriptable(), frame, tmp_path, name="traced")
    assert traced.artifact.options["torchscript"] == "traced"
    np.testing.assert_allclose(
        served(traced, tmp_path, frame), torch.softmax(torch.tensor(torch_answers(Unscriptable(), frame)), 1).numpy(),
        rtol=0, atol=1e-5,
    )


def test_a_trace_that_does_not_reproduce_the_module_is_refused(frame, tmp_path):
    with pytest.raises(RegistryError, match="does not reproduce the module"):
        register(Unscriptable(branch_on_batch_size=True), frame, tmp_path)


# -- safe loading ------------------------------------------------------------------------

SPRUNG: list[str] = []


def spring() -> None:
    SPRUNG.append("code from the file ran")


class Trap:
    def __reduce__(self):
        return (spring, ())


def test_a_state_dict_is_refused_with_how_to_export(frame, tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(net(4, 2).state_dict(), path)
    with pytest.raises(RegistryError, match=r"torch\.save: it holds tensors only \(a state dict\).*torch\.jit\.save"):
        register(path, frame, tmp_path)


def test_a_pickled_module_is_refused_without_running_it(frame, tmp_path):
    path = tmp_path / "module.pth"
    torch.save({"model": net(4, 2), "trap": Trap()}, path)
    with pytest.raises(RegistryError, match=r"pickled Python objects.*torch\.jit\.save"):
        register(path, frame, tmp_path)
    with pytest.raises(RegistryError, match="pickled Python objects"):
        register(path, frame, tmp_path, trust_pickle=True)  # TorchScript is the way, not trust
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps(Trap()))
    with pytest.raises(RegistryError, match="is a pickle"):
        register(legacy, frame, tmp_path)
    assert not SPRUNG


def test_a_changed_artifact_is_refused_at_load(frame, tmp_path):
    card = register(net(4, 2), frame, tmp_path, convert_to_onnx=False)
    registry = Registry(tmp_path / "registry")
    artifact = registry.version_dir(card.name, card.version) / card.artifact.path
    torch.save(net(4, 2).state_dict(), artifact)
    with pytest.raises(RegistryError, match="changed after registration"):
        registry.load_predictor(card)
    card.artifact.sha256 = sha256_of(artifact)  # even when the record is made to match
    with pytest.raises(RegistryError, match=r"written by torch\.save"):
        registry.load_predictor(card)


# -- the framework missing ---------------------------------------------------------------


def test_missing_torch_names_the_extra(frame, tmp_path, monkeypatch):
    path = scripted_file(net(4, 2), tmp_path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    with pytest.raises(RegistryError, match=r"the torch runtime needs torch: pip install 'modelmon\[torch\]'"):
        register(path, frame, tmp_path)


# -- ONNX --------------------------------------------------------------------------------


def test_the_onnx_graph_is_kept_when_it_agrees(frame, tmp_path):
    card = register(net(4, 3), frame, tmp_path, validation=frame.head(50))
    check = card.onnx_check
    assert check is not None and check.used, check
    assert check.rows_compared == 50
    assert check.max_abs_difference is not None and check.max_abs_difference <= 1e-5
    assert card.runtime == "onnx" and card.serving_artifact is not None
    assert card.flavor == "torch"


def test_the_model_is_served_natively_when_the_graph_disagrees(frame, tmp_path, monkeypatch):
    monkeypatch.setattr(torch_runtime, "ONNX_TOLERANCE", -1.0)
    card = register(net(4, 3), frame, tmp_path)
    assert card.runtime == "torch" and card.serving_artifact is None
    assert card.onnx_check is not None and not card.onnx_check.used
    assert card.onnx_check.rows_compared == len(frame)
    assert card.onnx_check.reason.startswith("probabilities differ by")


def test_the_model_is_served_natively_when_export_fails(frame, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::frobnicate' to ONNX is not supported")

    monkeypatch.setattr(torch_runtime, "export_onnx", fail)
    card = register(net(4, 2), frame, tmp_path)
    assert card.runtime == "torch"
    assert card.onnx_check is not None and not card.onnx_check.used
    assert "export failed: RuntimeError" in card.onnx_check.reason and "frobnicate" in card.onnx_check.reason


# -- torch.export programs (.pt2) --------------------------------------------------------


def exported(model: torch.nn.Module, inputs: int = 4) -> torch.export.ExportedProgram:
    """A torch.export program of ``model`` with a dynamic batch axis, as users export one."""
    batch = torch.export.Dim("batch")
    return torch.export.export(model, (torch.zeros(8, inputs),), dynamic_shapes=({0: batch},))


def test_a_torch_export_program_registers_from_the_command_line_and_serves_as_torch_does(frame, tmp_path):
    from typer.testing import CliRunner

    from modelmon.cli import app

    model = net(4, 3)
    path = tmp_path / "model.pt2"
    torch.export.save(exported(model), str(path))
    assert runtime_for_file(path) is TorchRuntime
    frame.to_csv(tmp_path / "train.csv", index=False)
    result = CliRunner().invoke(app, [
        "register", "--model", str(path), "--name", "exported", "--registry", str(tmp_path / "registry"),
        "--reference", str(tmp_path / "train.csv"), "--target", "label",
    ], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    card = Registry(tmp_path / "registry").card("exported")
    assert card.flavor == "torch" and card.signature.feature_names == FEATURES
    assert card.artifact.options["output"] == "logits" and card.artifact.options["torchscript"] == "traced"
    check = card.onnx_check
    assert check is not None and check.used and check.max_abs_difference is not None
    assert check.max_abs_difference <= 1e-5 and card.runtime == "onnx"
    # What the server answers: softmax of the module's own logits, one row and many.
    logits = torch_answers(model, frame)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert np.abs(served(card, tmp_path, frame) - expected).max() < 1e-5
    assert np.abs(served(card, tmp_path, frame.head(1)) - expected[:1]).max() < 1e-5


def test_an_exported_program_object_registers_as_a_regressor(frame, tmp_path):
    data = frame.assign(label=frame.x0 * 2.5 - frame.visits * 0.5)  # a target of non-whole numbers
    model = net(4, 1)
    program = exported(model)
    assert runtime_for_object(program) is TorchRuntime
    card = register(program, data, tmp_path, convert_to_onnx=False)
    assert card.signature.task.value == "regression" and card.runtime == "torch"
    assert card.artifact.options["output"] == "value"
    predictor = Registry(tmp_path / "registry").load_predictor(card)
    values = predictor.predict(FeatureBatch.from_frame(data, card.signature)).predicted
    assert np.abs(values - torch_answers(model, data)[:, 0]).max() < 1e-6
    fixed = torch.export.export(model, (torch.zeros(8, 4),))  # no dynamic batch axis: 8 rows only
    with pytest.raises(RegistryError, match=r"Guard failed.*export the program with a dynamic batch axis"):
        register(fixed, data, tmp_path, convert_to_onnx=False)


def test_a_torch_export_file_that_would_unpickle_is_refused_without_running_it(frame, tmp_path):
    import zipfile

    good = tmp_path / "good.pt2"
    torch.export.save(exported(net(4, 2)), str(good))

    def tampered(name: str, change) -> Path:
        path = tmp_path / name
        with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as target:
            for item in source.namelist():
                data = source.read(item)
                target.writestr(item, change(item, data))
        return path

    def pickled_weight(item: str, data: bytes) -> bytes:
        return data.replace(b'"use_pickle": false', b'"use_pickle": true') if item.endswith("weights_config.json") else data

    def trap_inputs(item: str, data: bytes) -> bytes:
        return pickle.dumps(Trap()) if "/sample_inputs/" in item else data

    with pytest.raises(RegistryError, match=r"weight '0\.weight' is a pickled object: loading it would unpickle"):
        register(tampered("pickled.pt2", pickled_weight), frame, tmp_path)
    with pytest.raises(RegistryError, match=r"not a well-formed torch\.export archive.*pickled objects"):
        register(tampered("trap.pt2", trap_inputs), frame, tmp_path)
    corrupt = tmp_path / "corrupt.pt2"
    corrupt.write_bytes(good.read_bytes()[:200])
    with pytest.raises(RegistryError, match=r"corrupt\.pt2 is not a torch\.export archive"):
        register(corrupt, frame, tmp_path)
    assert not SPRUNG
