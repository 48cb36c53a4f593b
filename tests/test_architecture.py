"""The structure the next change relies on: registries extended by decoration alone, a pure-data config schema,
no import cycle between project modules, no private name imported across modules, a thin entry script."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import train_classifier
from tools.import_graph import LAYERS, Import, all_imports, back_arrows, closure, module_cycles, package_of

ROOT = Path(__file__).resolve().parents[1]


class PooledLinear(nn.Module):
    """A deliberately small model: mean over time and frequency of each channel, then a linear layer."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class SquaredError(nn.Module):
    """Squared error of sigmoid probabilities (NaN targets count as 0)."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return ((torch.sigmoid(logits.float()) - torch.nan_to_num(targets.float())) ** 2).mean()


@pytest.fixture
def registered():
    """A model family and a loss added the way a user adds them: one decorated class or function each."""
    from factory.families import FAMILIES, ModelFamily, register_family
    from factory.losses import LOSSES

    @register_family("pooled_linear")
    class PooledLinearFamily(ModelFamily):
        input_kind = "mel"

        def build(self, name, num_classes, model, event_bins=0):
            return PooledLinear(num_classes), {}

        def rebuild(self, name, num_outputs, kwargs):
            return PooledLinear(num_outputs)

    LOSSES.register("squared_error", activation="sigmoid")(lambda **_: SquaredError())
    yield
    FAMILIES.unregister("pooled_linear")
    LOSSES.unregister("squared_error")


def test_a_family_and_a_loss_added_by_decoration_train_and_submit_from_the_config(run, tmp_path, registered):
    args = run["args"] + [f"--set=paths.runs_dir={tmp_path / 'runs'}", "--set=model.family=pooled_linear",
                          "--set=agent.loss=squared_error"]
    assert train_classifier.main(args) == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    from training.config import load_config

    resolved = load_config(run_dir / "config.ini")  # the demo's own model type, named by the family's run
    assert summary["model"] == resolved.model.type and 0.0 <= summary["soundscape_score"] <= 1.0
    from utils.checkpoints import load_checkpoint

    ckpt = load_checkpoint(summary["checkpoint"])
    assert ckpt["model_kwargs"] == {"family": "pooled_linear"} and ckpt["activation"] == "sigmoid"
    assert "squared_error" in (run_dir / "config.ini").read_text()


def test_an_unknown_family_or_loss_is_refused_at_load_with_the_registered_names():
    from training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"\[model\] family = 'nope'.*allowed: cnn, embedding, tiny, wav2vec2"):
        load_config(None, ["model.family=nope"])
    with pytest.raises(ConfigError, match=r"\[agent\] loss = 'nope'.*allowed: asl, bce, bce_focal, ce, focal"):
        load_config(None, ["agent.loss=nope"])
    with pytest.raises(ConfigError, match=r"a softmax loss does not fit \[data\] task = binary.*allowed: asl, bce"):
        load_config(None, ["agent.loss=ce", "data.task=binary"])
    assert "onecycle" in load_config(None, ["agent.lr_decay_type=onecycle"]).agent.lr_decay_type


def test_the_config_schema_imports_nothing_of_the_project_nor_torch():
    code = ("import sys; sys.path.insert(0, '.'); import utils.config_schema; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'numpy', 'dataloader', "
            "'factory', 'inference') or (m.startswith('utils.') and m != 'utils.config_schema')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def project_imports() -> list[Import]:
    """Every import between project modules: function-level, ``TYPE_CHECKING`` and string (importlib tables)."""
    return all_imports(ROOT)


def test_every_package_arrow_points_down_the_declared_order():
    """utils <- dataloader <- factory <- inference <- training <- archive <- entry scripts; predict.py and detect.py
    use inference (and what it stands on), never training."""
    assert LAYERS == ("utils", "dataloader", "factory", "inference", "training", "archive", "entry")
    assert [f"{i.source} -> {i.target} ({i.how}, line {i.line})" for i in back_arrows(project_imports())] == []


def test_no_import_cycle_between_project_modules():
    assert module_cycles(project_imports()) == []


def test_utils_holds_leaves_only():
    """No module of utils imports another package of the project."""
    assert sorted({i.target for i in project_imports() if package_of(i.source) == "utils"
                   and package_of(i.target) != "utils"}) == []


def test_the_kaggle_package_ships_what_predict_imports_and_no_training_code():
    from inference.package import CODE

    shipped = {Path(c).stem if c.endswith(".py") else c for c in CODE}
    needed = {m.split(".")[0] for m in closure("predict", project_imports())}
    assert needed <= shipped, needed - shipped
    assert "training" not in shipped and not any(m.startswith("training") for m in closure("detect", project_imports()))


def test_the_reader_sees_string_type_checking_and_function_level_imports(tmp_path):
    """The layer test above can fail: a tree with an arrow back up through each kind of import is caught."""
    for package in ("utils", "dataloader", "training"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "training" / "loop.py").write_text("from utils.leaf import x\n")
    (tmp_path / "dataloader" / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                                  "    from dataloader.b import B\n")
    (tmp_path / "dataloader" / "b.py").write_text("def f():\n    from . import a\n")
    (tmp_path / "utils" / "leaf.py").write_text("TABLE = {'loop': 'training.loop'}\n"
                                                "def g():\n    import dataloader.a\n")
    found = all_imports(tmp_path)
    assert {(i.source, i.target, i.how) for i in back_arrows(found)} == {
        ("utils.leaf", "training.loop", "string"), ("utils.leaf", "dataloader.a", "import")}
    assert module_cycles(found) == [["dataloader.a", "dataloader.b"], ["training.loop", "utils.leaf"]]
    assert {i.how for i in found if i.source == "dataloader.a"} == {"type_checking"}


def test_no_private_name_is_imported_across_modules():
    private = sorted(f"{i.source} imports {i.target}.{i.name}" for i in project_imports()
                     if i.name.startswith("_") and not i.name.startswith("__"))
    assert private == []


def test_the_entry_only_wires_the_stages():
    tree = ast.parse((ROOT / "train_classifier.py").read_text())
    lengths = {f.name: f.end_lineno - f.lineno + 1 for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    assert len((ROOT / "train_classifier.py").read_text().splitlines()) < 250
    assert max(lengths.values()) <= 60, lengths
