"""Typed, validated configuration: one dataclass per INI section, parsed once.

``config.ini`` is the single place where every knob lives.  :func:`load_config` reads it, applies
``--set section.key=value`` overrides, converts every value to the type of its dataclass field and
checks choices, ranges and cross-field rules.  Any problem stops the run before work starts, with a
message naming the section, the key, the value and what is allowed.
"""
from __future__ import annotations

import configparser
import dataclasses
import math
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from utils.config_schema import (  # noqa: F401 - the
    SECTIONS,
    AgentConfig,
    AugmentationConfig,
    CallbacksConfig,
    Config,  # public types, as
    DataConfig,
    DataProcessConfig,
    EvaluationConfig,
    ModelConfig,  # load_config returns them
    PathsConfig,
    TestingConfig,
    TrainerConfig,
)
from utils.tasks import get_task, list_tasks


class ConfigError(ValueError):
    """A config value that cannot be used; the message says how to fix it."""


# Keys of the seed project that no longer exist, with what replaced them.
RETIRED_KEYS: dict[tuple[str, str], str] = {
    ("data", "output_dir"): "replaced by [paths] cache_dir",
    ("data", "hash_path"): "replaced by [paths] cache_dir (the cache folder is named by the settings' hash)",
    ("data", "multi_threading"): "removed: preprocessing always runs [data] num_workers processes "
                                 "(num_workers = 1 for a single process)",
    ("data_process", "stats_max_files"): "removed: the statistics now come from every training recording "
                                         "(per-file sums are stored in the cache, so this costs nothing)",
}
SECRET_WORDS = ("token", "api_key", "apikey", "password", "secret")


# The registries a schema field can name (``registry=...``): where each one's names are listed, imported only
# when a config is loaded (the schema itself imports nothing of the project).
REGISTRY_CHOICES: dict[str, tuple[str, str]] = {
    "sources": ("dataloader.sources", "list_sources"), "competitions": ("dataloader.sources", "COMPETITIONS"),
    "editions": ("dataloader.sources", "EDITIONS"), "losses": ("factory.losses", "list_losses"),
    "optimizers": ("factory.optimizers", "list_optimizers"), "schedulers": ("factory.schedulers", "list_schedulers"),
    "families": ("factory.families", "list_families"), "embedders": ("dataloader.embedders", "list_embedders"),
    "tasks": ("utils.tasks", "list_tasks"),
}


def _timm_model(name: str) -> Optional[str]:
    from factory.models import timm_model_problem  # noqa: PLC0415 - timm only when a model name is checked

    return timm_model_problem(name)


# Registries too large to list in a message: a check that explains what is wrong instead.
REGISTRY_CHECKS: dict[str, Callable[[str], Optional[str]]] = {"timm_models": _timm_model}


def registry_choices(kind: str) -> list[str]:
    """The values the registry ``kind`` allows now (what a schema field's ``registry`` names)."""
    import importlib  # noqa: PLC0415

    module, name = REGISTRY_CHOICES[kind]
    names = getattr(importlib.import_module(module), name)
    return list(names() if callable(names) else names)


def _allowed(meta: Any) -> Optional[list]:
    """A field's allowed values: its static choices plus its registry's names (None: any value)."""
    registry = meta.get("registry")
    if not meta.get("choices") and registry not in REGISTRY_CHOICES:
        return None
    return [*(meta.get("choices") or ()), *(registry_choices(registry) if registry in REGISTRY_CHOICES else ())]


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _convert(section: str, key: str, raw: str, f: dataclasses.Field) -> Any:
    """Convert one raw INI string to the field's type and check its rules."""
    meta = f.metadata
    kind = f.type if isinstance(f.type, type) else {"bool": bool, "int": int, "float": float, "str": str}[f.type]
    text = raw.strip()

    def fail(why: str) -> ConfigError:
        return ConfigError(f"[{section}] {key} = {raw!r}: {why}")

    if kind is bool:
        if text.lower() in _TRUE:
            value: Any = True
        elif text.lower() in _FALSE:
            value = False
        else:
            raise fail("expected a boolean; allowed: true/false (also yes/no, on/off, 1/0)")
    elif kind is int:
        try:
            value = int(text)
        except ValueError:
            raise fail("expected an integer") from None
    elif kind is float:
        try:
            value = float(text)
        except ValueError:
            raise fail("expected a number") from None
        if not math.isfinite(value):
            raise fail("expected a finite number (NaN and infinity are refused)")
    else:
        value = text
    allowed = _allowed(meta)
    if allowed and isinstance(value, str) and value not in allowed and value.lower() in allowed:
        value = value.lower()  # transfer_learning = True works like true
    if allowed is not None and value not in allowed:
        raise fail(f"not an allowed value; allowed: {', '.join(str(c) for c in allowed)}")
    if meta.get("registry") in REGISTRY_CHECKS:
        problem = REGISTRY_CHECKS[meta["registry"]](value)
        if problem:
            raise fail(problem)
    if meta.get("min") is not None and value < meta["min"]:
        raise fail(f"must be >= {meta['min']}")
    if meta.get("max") is not None and value > meta["max"]:
        raise fail(f"must be <= {meta['max']}")
    return value


def _check_value(section: str, key: str, value: str) -> None:
    """Values are single-line: an indented line continues the value above it in INI syntax, which could smuggle a
    section or a secret into a text value and into the resolved config a run writes."""
    if "\n" in value or "\r" in value:
        raise ConfigError(f"[{section}] {key}: the value spans several lines (an indented line continues the value "
                          f"above it); values are single-line: unindent or remove the extra line")
    if "[" in value:
        raise ConfigError(f"[{section}] {key} = {value!r}: '[' is not allowed in a value (it reads like a section "
                          f"header); remove it")


def _check_key(section: str, key: str) -> None:
    if any(word in key.lower() for word in SECRET_WORDS):
        raise ConfigError(f"[{section}] {key}: secrets are never read from config.ini; remove the key and set "
                          f"the environment variable instead (NEPTUNE_API_TOKEN for Neptune, KAGGLE_API_TOKEN or "
                          f"~/.kaggle/access_token for Kaggle)")
    if (section, key) in RETIRED_KEYS:
        raise ConfigError(f"[{section}] {key}: {RETIRED_KEYS[(section, key)]}")
    allowed = [f.name for f in fields(SECTIONS[section])]
    if key not in allowed:
        raise ConfigError(f"[{section}] {key}: unknown key; allowed keys of [{section}]: {', '.join(allowed)}")


def _check_section(section: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"[{section}]: unknown section; allowed sections: {', '.join(SECTIONS)}")


def parse_override(text: str) -> tuple[str, str, str]:
    """Split ``section.key=value`` into its parts."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set trainer.n_epochs=3")
    name, value = text.split("=", 1)
    section, key = name.strip().split(".", 1)
    return section.strip(), key.strip(), value


def load_config(path: Optional[str | Path] = None, overrides: Iterable[str] = ()) -> Config:
    """Read ``path`` (or only defaults when None), apply ``section.key=value`` overrides, validate."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
    parser.optionxform = str  # keys are case-sensitive names
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as exc:
            raise ConfigError(f"{path}: not a valid INI file: {exc}") from None
    raw: dict[str, dict[str, str]] = {s: dict(parser.items(s)) for s in parser.sections()}
    for text in overrides:
        section, key, value = parse_override(text)
        raw.setdefault(section, {})[key] = value
    sections = {}
    for section, values in raw.items():
        _check_section(section)
        for key, value in values.items():
            _check_key(section, key)
            _check_value(section, key, value)
    for section, cls in SECTIONS.items():
        values = raw.get(section, {})
        kwargs = {f.name: _convert(section, f.name, values[f.name], f) for f in fields(cls) if f.name in values}
        sections[section] = cls(**kwargs)
    cfg = Config(**sections)
    if cfg.augmentation.mixup_kind == "auto":  # resolved by the task: the run folder's config.ini says which
        cfg.augmentation.mixup_kind = get_task(cfg.data.task).mixup  # overlay (labels united) or beta (one-hot)
    if not cfg.paths.data_dir:  # the competition's folder, where ./download_data.sh puts it
        cfg.paths.data_dir = f"data/{cfg.data.competition}"
    _check_cross_fields(cfg)
    return cfg


def demo_overrides(cfg: Config, overrides: Iterable[str] = ()) -> list[str]:
    """The embedded demo's own settings (:data:`dataloader.sources.demo_source.DEMO_SETTINGS`) that a run of
    ``cfg`` takes: none unless it trains on the demo; of those, the keys neither in ``overrides`` (``--set``) nor
    set by the config file to something other than their default. Give them to :func:`load_config` before the
    user's overrides."""
    from dataloader.sources.auto import uses_demo  # noqa: PLC0415
    from dataloader.sources.demo_source import DEMO_SETTINGS  # noqa: PLC0415

    if not uses_demo(cfg.data, cfg.paths):
        return []
    chosen = {".".join(parse_override(text)[:2]) for text in overrides}
    out = []
    for key, value in DEMO_SETTINGS.items():
        section, name = key.split(".", 1)
        default = next(f for f in fields(SECTIONS[section]) if f.name == name)
        default_value = default.default if default.default is not MISSING else default.default_factory()
        if key not in chosen and getattr(getattr(cfg, section), name) == default_value:
            out.append(f"{key}={value}")
    return out


def _check_cross_fields(cfg: Config) -> None:
    """Rules between fields, asked of the registries (what a family takes, what activation a loss trains)."""
    from factory.families import get_family, list_families, run_frontend  # noqa: PLC0415
    from factory.losses import list_losses, loss_activation  # noqa: PLC0415

    dp, data = cfg.data_process, cfg.data
    family = get_family(cfg.model.family)
    problem = family.check_type(cfg.model.type)
    if problem:
        raise ConfigError(f"[model] type = {cfg.model.type!r}: {problem}")
    if cfg.model.head not in family.heads:
        raise ConfigError(f"[model] head = {cfg.model.head}: [model] family = {family.name} builds heads "
                          f"{', '.join(family.heads)}; allowed: {', '.join(family.heads)}")
    if cfg.agent.layer_lr_decay != 1.0 and not family.layer_lr_decay:
        allowed = [name for name in list_families() if get_family(name).layer_lr_decay]
        raise ConfigError(f"[agent] layer_lr_decay = {cfg.agent.layer_lr_decay}: applies to [model] family = "
                          f"{' or '.join(allowed)}; keep 1.0 for {family.name}")
    activation = loss_activation(cfg.agent.loss)
    task = get_task(data.task)
    wanted = task.activation or activation
    if activation != wanted:
        allowed = [name for name in list_losses() if loss_activation(name) == wanted]
        raise ConfigError(f"[agent] loss = {cfg.agent.loss}: a {activation} loss does not fit [data] task = "
                          f"{data.task}, which trains {wanted} outputs; allowed: {', '.join(allowed)}")
    if task.frame_level and cfg.model.head != "sed":
        raise ConfigError("[model] head = linear: [data] task = events needs frame-wise outputs; allowed: sed")
    if task.frame_level and data.source not in ("csv",):
        raise ConfigError(f"[data] source = {data.source}: [data] task = events needs event annotations; allowed: "
                          f"csv (path,start,end,label rows, or Raven selection tables listed in it)")
    if data.pseudo_labels and family.input_kind != "mel":
        raise ConfigError(f"[data] pseudo_labels: soft pseudo-labels train mel models; [model] family = {family.name} "
                          f"takes {family.input_kind} input")
    if data.pseudo_labels and not task.soft_labels:
        allowed = ", ".join(n for n in list_tasks() if get_task(n).soft_labels)
        raise ConfigError(f"[data] pseudo_labels = {data.pseudo_labels}: soft pseudo-labels train the {allowed} "
                          f"task (task is {data.task}); allowed: empty")
    if cfg.agent.distill_teacher and not task.distillable:
        raise ConfigError(f"[agent] distill_teacher: distillation trains clip-level outputs; [data] task = "
                          f"{data.task}; allowed: {', '.join(n for n in list_tasks() if get_task(n).distillable)}")
    if cfg.agent.distill_teacher and not Path(cfg.agent.distill_teacher).is_file() \
            and cfg.agent.distill_teacher.partition(":")[0] not in registry_choices("embedders"):
        raise ConfigError(f"[agent] distill_teacher = {cfg.agent.distill_teacher}: no such checkpoint, nor an "
                          f"embedding model; allowed: a .pt / .onnx / .xml file, or "
                          f"{', '.join(registry_choices('embedders'))} (optionally <model>:<model path>)")
    if cfg.agent.distill_embedding:
        check_embedding_distillation(cfg, family, task)
    if data.fold >= data.n_folds:
        raise ConfigError(f"[data] fold = {data.fold}: must be < n_folds ({data.n_folds}); allowed: 0..{data.n_folds - 1}")
    if dp.f_max > dp.sample_rate / 2:
        raise ConfigError(f"[data_process] f_max = {dp.f_max}: must be <= sample_rate / 2 = {dp.sample_rate / 2}")
    if dp.f_min >= dp.f_max:
        raise ConfigError(f"[data_process] f_min = {dp.f_min}: must be < f_max ({dp.f_max})")
    from dataloader.embedders import EmbedderError  # noqa: PLC0415

    try:
        frontend = run_frontend(cfg)  # an embedding model is loaded here: a missing file or runtime stops at once
    except EmbedderError as exc:
        raise ConfigError(f"[model] family = {family.name}, type = {cfg.model.type}: {exc}") from None
    if not frontend.whole_frames(data.window_s):
        raise ConfigError(f"[data_process] hop_length = {dp.hop_length}: a {data.window_s}-s window is "
                          f"{data.window_s * frontend.frames_per_second:g} frames of the {frontend.kind} front end "
                          f"at {frontend.sample_rate} Hz; choose a hop that gives whole frames (e.g. 500 or 320 at "
                          f"32 kHz) so windows do not drift")
    if cfg.callbacks.neptune_logger and not cfg.callbacks.neptune_project and cfg.callbacks.neptune_mode in (
            "async", "sync"):
        raise ConfigError("[callbacks] neptune_project = '': required when neptune_logger = true and neptune_mode "
                          "is async or sync; allowed: 'workspace/project'")


def check_embedding_distillation(cfg: Config, family: Any, task: Any) -> None:
    """``[agent] distill_embedding``: an embedding model, a clip-level task, a mel CNN with a linear head."""
    from dataloader.embedders import embedder_spec  # noqa: PLC0415

    setting = f"[agent] distill_embedding = {cfg.agent.distill_embedding}"
    if embedder_spec(cfg.agent.distill_embedding) is None:
        raise ConfigError(f"{setting}: not an embedding model; allowed: {', '.join(registry_choices('embedders'))} "
                          f"(optionally <model>:<model path>), or empty")
    if not task.distillable:
        raise ConfigError(f"{setting}: distillation trains clip-level outputs; [data] task = {cfg.data.task}; "
                          f"allowed: {', '.join(n for n in list_tasks() if get_task(n).distillable)}")
    if family.input_kind != "mel" or cfg.model.head != "linear":
        raise ConfigError(f"{setting}: the projection reads a CNN's pooled features; [model] family = {family.name}, "
                          f"head = {cfg.model.head}; allowed: a mel family (cnn, tiny) with head = linear")


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_ini(cfg: Config) -> str:
    """Render the resolved config as a commented INI (what a run folder stores)."""
    lines: list[str] = []
    for section, cls in SECTIONS.items():
        lines.append(f"[{section}]")
        obj = getattr(cfg, section)
        for f in fields(cls):
            lines.append(f"# {f.metadata['help']}")
            choices = _allowed(f.metadata)
            if choices:
                lines.append(f"# choices: {', '.join(str(c) for c in choices)}")
            lines.append(f"{f.name} = {_format_value(getattr(obj, f.name))}")
        lines.append("")
    return "\n".join(lines)
