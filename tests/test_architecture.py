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

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dataloader", "factory", "inference", "utils")


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
    assert summary["model"] == "efficientnet_b0" and 0.0 <= summary["soundscape_score"] <= 1.0
    from utils.checkpoints import load_checkpoint

    ckpt = load_checkpoint(summary["checkpoint"])
    assert ckpt["model_kwargs"] == {"family": "pooled_linear"} and ckpt["activation"] == "sigmoid"
    assert "squared_error" in (run_dir / "config.ini").read_text()


def test_an_unknown_family_or_loss_is_refused_at_load_with_the_registered_names():
    from utils.config import ConfigError, load_config

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


def project_imports() -> dict[str, set[tuple[str, str]]]:
    """module -> {(imported module, imported name or '')} for every project module, function-level imports
    included; imports under ``if TYPE_CHECKING:`` (annotations only, never executed) are not dependencies."""
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    files += [ROOT / "train_classifier.py", ROOT / "predict.py"]
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in files}
    graph: dict[str, set[tuple[str, str]]] = {}
    for name, path in modules.items():
        edges = set()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):  # drop the bodies of `if TYPE_CHECKING:` blocks
            if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                node.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    edges.add((target, "") if target in modules else (node.module, alias.name))
            elif isinstance(node, ast.Import):
                edges.update((alias.name, "") for alias in node.names)
        graph[name] = {(m, n) for m, n in edges if m in modules}
    return graph


def test_no_import_cycle_between_project_modules():
    graph = {m: {t for t, _ in edges if t != m} for m, edges in project_imports().items()}
    for package in list(graph):  # a package's __init__ imports its modules; its modules may not import it back
        graph[package] = {t for t in graph[package] if not t.startswith(package + ".")}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [node, nxt]
                                                           if nxt in path else [*path, node, nxt]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_no_private_name_is_imported_across_modules():
    private = sorted(f"{m} imports {t}.{n}" for m, edges in project_imports().items() for t, n in edges
                     if n.startswith("_") and not n.startswith("__"))
    assert private == []


def test_the_entry_only_wires_the_stages():
    tree = ast.parse((ROOT / "train_classifier.py").read_text())
    lengths = {f.name: f.end_lineno - f.lineno + 1 for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    assert len((ROOT / "train_classifier.py").read_text().splitlines()) < 250
    assert max(lengths.values()) <= 60, lengths
