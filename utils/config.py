"""Typed, validated configuration: one dataclass per INI section, parsed once.

``config.ini`` is the single place where every knob lives.  :func:`load_config` reads it, applies
``--set section.key=value`` overrides, converts every value to the type of its dataclass field and
checks choices, ranges and cross-field rules.  Any problem stops the run before work starts, with a
message naming the section, the key, the value and what is allowed.
"""
from __future__ import annotations

import configparser
import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Optional


class ConfigError(ValueError):
    """A config value that cannot be used; the message says how to fix it."""


def opt(default: Any, help: str, choices: Optional[Iterable[str]] = None, minimum: Optional[float] = None,
        maximum: Optional[float] = None, validator: Optional[Callable[[Any], Optional[str]]] = None) -> Any:
    """A dataclass field carrying its documentation and validation rules as metadata."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "min": minimum, "max": maximum,
            "validator": validator}
    return field(default=default, metadata=meta)


def _timm_model_name(name: str) -> Optional[str]:
    """Return an error message when ``name`` is not a timm architecture (timm imported lazily)."""
    if not name:
        return "an empty model name is not allowed; any name of timm.list_models(), e.g. efficientnet_b0"
    import timm  # noqa: PLC0415 - slow import, only when a model name is checked

    if timm.is_model(name):
        return None
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"not a timm model name; allowed: any name of timm.list_models() (e.g. efficientnet_b0).{hint}"


def _registered(name: str, kind: str) -> Optional[str]:
    """Return an error message when ``name`` is not in the factory registry ``kind``."""
    import importlib  # noqa: PLC0415

    names = getattr(importlib.import_module(f"factory.{kind}"), f"list_{kind}")()
    return None if name in names else f"unknown name; allowed: {', '.join(names)}"


@dataclass
class TestingConfig:
    testing: bool = opt(False, "Quick run: a seeded sample of recordings, a small model, few epochs.")
    data_samples_for_testing: int = opt(60, "Recordings used in testing mode (seeded, keeps several classes).",
                                        minimum=4)
    testing_model: str = opt("mobilenetv3_small_050", "timm model used in testing mode.",
                             validator=_timm_model_name)
    testing_epochs: int = opt(2, "Epochs in testing mode.", minimum=1)


@dataclass
class CallbacksConfig:
    neptune_logger: bool = opt(False, "Log to Neptune (token only from the NEPTUNE_API_TOKEN environment variable).")
    neptune_project: str = opt("", "Neptune project, 'workspace/project'.")
    neptune_mode: str = opt("offline", "Neptune connection mode; the hosted service closed in 2026, so "
                            "'offline' (local .neptune folder) is the default.",
                            choices=("async", "sync", "offline", "debug"))
    model_checkpoint: bool = opt(True, "Save the best and the last checkpoint of the run.")
    model_checkpoint_type: str = opt("val_score", "Metric the checkpoint monitors (score: higher is better, "
                                     "loss: lower is better).", choices=("val_score", "val_loss"))
    model_checkpoint_verbose: bool = opt(True, "Log each time a new best checkpoint is written.")
    mlflow_logger: bool = opt(False, "Log params, metrics and curves to MLflow.")
    mlflow_tracking_uri: str = opt("", "MLflow tracking URI (e.g. http://host:5000); empty = a local store in "
                                   "<runs_dir>/mlruns.")
    mlflow_experiment: str = opt("birdclef", "MLflow experiment name.")
    checkpoint_top_k: int = opt(1, "Keep the k best checkpoints (best.pt is the best; others top-<rank>.pt).",
                                minimum=1)


@dataclass
class PathsConfig:
    data_dir: str = opt("data/birdclef-2024", "Kaggle-layout data folder (what ./download_data.sh fills).")
    demo_dir: str = opt("data/demo", "Where the embedded demo dataset is generated.")
    cache_dir: str = opt("cache", "Preprocessed mel cache; one sub-folder per hash of [data_process].")
    runs_dir: str = opt("runs", "One folder per run: resolved config, log, metrics, checkpoints, summary.")
    submissions_dir: str = opt("submissions", "Where submission CSVs are written.")


@dataclass
class TrainerConfig:
    seed: int = opt(42, "Global seed: Python, NumPy, torch, DataLoader workers, split, demo sample.")
    batch_size: int = opt(32, "Training batch size (validation uses twice this).", minimum=1)
    num_workers: int = opt(0, "DataLoader worker processes (crops are memory-mapped slices, 0 is usually "
                           "fastest on CPU).", minimum=0)
    n_epochs: int = opt(30, "Training epochs.", minimum=1)
    device: str = opt("auto", "Where to train: auto picks cuda when available.", choices=("auto", "cpu", "cuda"))
    channels_last: bool = opt(True, "channels_last memory format (faster for CNNs on CPU as well as GPU).")
    threads: int = opt(0, "torch intra-op threads; 0 = one per available core.", minimum=0)
    amp: str = opt("auto", "Mixed precision (bf16 autocast where supported, else fp16 with a grad scaler): auto = on "
                   "CUDA only.", choices=("auto", "true", "false"))
    compile: bool = opt(False, "torch.compile the model (pays a compile time up front).")
    grad_clip: float = opt(0.0, "Clip the gradient norm to this value (0 = off).", minimum=0.0)
    accumulate_steps: int = opt(1, "Optimizer step every this many batches (gradient accumulation).", minimum=1)
    early_stopping_patience: int = opt(0, "Stop when the monitored metric has not improved for this many epochs "
                                       "(0 = never).", minimum=0)
    resume: str = opt("", "Resume training: a checkpoint path (e.g. runs/<id>/checkpoints/last.pt), 'auto' = the "
                      "newest last.pt under runs_dir, or empty for a fresh start.")


@dataclass
class AgentConfig:
    lr_decay: bool = opt(True, "Use a learning-rate scheduler.")
    lr_decay_type: str = opt("cosine", "Scheduler: cosine (linear warm-up from lr_start to lr_warmup_end, then "
                             "cosine to lr_end), exponential (lr_warmup_end * exp_gamma^epoch), step "
                             "(x step_gamma every step_epochs), onecycle, plateau (x plateau_factor after "
                             "plateau_patience epochs without a better val_score).",
                             choices=("cosine", "exponential", "step", "onecycle", "plateau"))
    lr_start: float = opt(1e-4, "Learning rate at the first step.", minimum=0.0)
    lr_warmup_end: float = opt(2e-3, "Peak learning rate, reached at the end of the warm-up.", minimum=0.0)
    lr_end: float = opt(1e-5, "Learning rate at the last step (cosine).", minimum=0.0)
    warmup_epochs: float = opt(1.0, "Warm-up length in epochs (cosine).", minimum=0.0)
    exp_gamma: float = opt(0.85, "Per-epoch decay factor (exponential).", minimum=0.0, maximum=1.0)
    step_epochs: int = opt(10, "Epochs between learning-rate drops (step).", minimum=1)
    step_gamma: float = opt(0.1, "Factor of each drop (step).", minimum=0.0, maximum=1.0)
    plateau_patience: int = opt(2, "Epochs without improvement before a drop (plateau).", minimum=0)
    plateau_factor: float = opt(0.5, "Factor of each drop (plateau).", minimum=0.0, maximum=1.0)
    head_lr_scale: float = opt(1.0, "The classifier head's learning rate as a multiple of the backbone's.",
                               minimum=0.0)
    layer_lr_decay: float = opt(1.0, "wav2vec2: layer-wise learning-rate decay (layer i of L gets "
                                "lr * decay^(L - i); 1.0 = off).", minimum=0.0, maximum=1.0)
    lr_verbose: bool = opt(False, "Log the learning rate at each epoch end.")
    loss: str = opt("bce", "Loss function: a name of factory.list_losses().",
                    validator=lambda v: _registered(v, "losses"))
    optimizer: str = opt("adamw", "Optimizer: a name of factory.list_optimizers().",
                         validator=lambda v: _registered(v, "optimizers"))
    weight_decay: float = opt(1e-2, "Weight decay (not applied to norms and biases).", minimum=0.0)
    label_smoothing: float = opt(0.0, "Label smoothing of the targets.", minimum=0.0, maximum=0.5)
    focal_gamma: float = opt(2.0, "Focusing exponent of focal and bce_focal.", minimum=0.0)
    focal_alpha: float = opt(0.25, "Positive-class weight of focal and bce_focal (-1 = none).", minimum=-1.0,
                             maximum=1.0)
    focal_weight: float = opt(1.0, "Weight of the focal term in bce_focal.", minimum=0.0)
    asl_gamma_pos: float = opt(0.0, "Asymmetric loss: focusing exponent of positives.", minimum=0.0)
    asl_gamma_neg: float = opt(4.0, "Asymmetric loss: focusing exponent of negatives.", minimum=0.0)
    asl_clip: float = opt(0.05, "Asymmetric loss: probability shift that discards easy negatives.", minimum=0.0,
                          maximum=1.0)


@dataclass
class ModelConfig:
    family: str = opt("cnn", "cnn = a timm network on mel spectrograms; wav2vec2 = a transformers Wav2Vec2 on raw "
                      "16 kHz waveforms (from a waveform cache).", choices=("cnn", "wav2vec2"))
    type: str = opt("efficientnet_b0", "cnn: any timm model name, built with a new head. wav2vec2: a Hugging Face "
                    "name (e.g. facebook/wav2vec2-base) or a local save_pretrained folder.")
    transfer_learning: str = opt("auto", "Pretrained ImageNet weights: auto = use them when available (local "
                                 "file, timm/HF cache, or hub when online), otherwise warn and start from random "
                                 "weights; true = insist and fail fast; false = random weights.",
                                 choices=("auto", "true", "false"))
    pretrained_path: str = opt("", "Local .safetensors/.pth/.bin weights for the backbone (how Kaggle notebooks "
                               "run offline); empty = timm/HF cache.")
    drop_rate: float = opt(0.2, "Dropout before the classifier.", minimum=0.0, maximum=1.0)
    drop_path_rate: float = opt(0.1, "Stochastic depth rate.", minimum=0.0, maximum=1.0)
    head: str = opt("linear", "Classifier head: linear (timm's, on pooled features) or sed (frame-wise logits "
                    "with attention pooling over time, as the BirdCLEF SED solutions).", choices=("linear", "sed"))
    in_chans: int = opt(1, "Input channels of the network: 1 (the stem adapted to the mel), or 3 (the mel "
                        "repeated, keeping an RGB-pretrained stem as it is).", choices=(1, 3))
    freeze_feature_encoder: bool = opt(True, "wav2vec2: keep the convolutional feature encoder frozen.")


@dataclass
class DataConfig:
    source: str = opt("auto", "auto = Kaggle data when data_dir/train_metadata.csv exists, otherwise the demo; "
                      "birdclef = insist on Kaggle data; demo = always the embedded demo.",
                      choices=("auto", "birdclef", "demo"))
    demo_seed: int = opt(2024, "Seed of the generated demo dataset.")
    demo_scale: float = opt(1.0, "Size of the demo: recordings per species x this (1.0 = ~390 recordings).",
                            minimum=0.05, maximum=10.0)
    n_folds: int = opt(5, "Grouped, stratified folds.", minimum=2)
    fold: int = opt(0, "Fold used for validation (0 .. n_folds-1).", minimum=0)
    min_samples_in_class: int = opt(1, "Classes with fewer recordings are left out of training.", minimum=1)
    shuffle: bool = opt(True, "Shuffle the training set every epoch.")
    num_workers: int = opt(2, "Processes used for preprocessing.", minimum=1)
    window_s: float = opt(5.0, "Window length in seconds (training crops and submission rows).", minimum=0.5)
    crop: str = opt("random", "Training window: random crop, or the first window (calls cluster near the start "
                    "of xeno-canto recordings).", choices=("random", "first"))
    pad_mode: str = opt("repeat", "Short recordings: repeat them to fill a window, or pad with silence.",
                        choices=("repeat", "silence"))
    secondary_label_weight: float = opt(0.5, "Target value for secondary labels (0 = ignore them).",
                                        minimum=0.0, maximum=1.0)
    secondary_labels: str = opt("weight", "weight = secondary labels get secondary_label_weight; mask = their "
                                "entries are left out of the loss (present but unlocated in the recording).",
                                choices=("weight", "mask"))
    sampler: str = opt("random", "Training order: random (shuffle), or balanced (recordings drawn with weight "
                       "count(class)^-0.5, as several BirdCLEF solutions did).", choices=("random", "balanced"))
    max_recordings_per_class: int = opt(0, "Cap on training recordings per class, seeded (0 = none; the 2024 "
                                        "3rd place used 500).", minimum=0)


@dataclass
class DataProcessConfig:
    sample_rate: int = opt(32000, "Target sample rate; other rates are resampled.", minimum=8000)
    n_mels: int = opt(128, "Mel bins.", minimum=8)
    n_fft: int = opt(1024, "STFT size.", minimum=64)
    hop_length: int = opt(500, "STFT hop; must divide a window into whole frames (500 at 32 kHz = 320 frames "
                          "per 5 s).", minimum=16)
    f_min: float = opt(50.0, "Lowest mel frequency (Hz).", minimum=0.0)
    f_max: float = opt(14000.0, "Highest mel frequency (Hz), at most sample_rate / 2.", minimum=1.0)
    max_length_s: float = opt(60.0, "single mode: seconds kept from the start of each recording.", minimum=1.0)
    mode: str = opt("slice", "slice = keep the whole recording (training crops any part of it); single = keep "
                    "only the first max_length_s seconds.", choices=("slice", "single"))
    normalization: str = opt("per_frequency", "Standardisation of the dB mel: per_frequency (mean/std per mel "
                             "bin, fitted on training recordings), global (one mean/std), per_clip (each "
                             "recording by itself), none. Applied when the cache is read: changing it reuses "
                             "the cache.",
                             choices=("per_frequency", "global", "per_clip", "none"))


@dataclass
class AugmentationConfig:
    data_augmentation: bool = opt(True, "Master switch for training augmentations.")
    augment_gain: bool = opt(True, "Random level change of each example (the dB front end keeps levels).")
    gain_db: float = opt(12.0, "Largest level change, in dB (uniform in -gain_db..+gain_db).", minimum=0.0)
    augment_add_noise: bool = opt(True, "Add Gaussian noise to the standardised mel.")
    noise_std: float = opt(0.05, "Standard deviation of that noise (in standardised units).", minimum=0.0)
    augment_spec_augment: bool = opt(True, "SpecAugment: random time and frequency masks.")
    freq_mask_max: int = opt(16, "Widest frequency mask (mel bins).", minimum=0)
    time_mask_max: int = opt(32, "Widest time mask (frames).", minimum=0)
    n_masks: int = opt(2, "Masks of each kind per example.", minimum=0)
    augment_mixup: bool = opt(True, "Overlay another example of the batch (element-wise max of the dB mels, "
                              "i.e. the two sounds added); targets become the union, as species overlap in "
                              "soundscapes.")
    mixup_prob: float = opt(0.5, "Share of the batch that gets a partner overlaid.", minimum=0.0, maximum=1.0)
    augment_cutmix: bool = opt(False, "CutMix along time: a span of a partner's window replaces the same span; "
                               "targets mix by time share.")
    cutmix_prob: float = opt(0.5, "Share of the batch that gets a CutMix span.", minimum=0.0, maximum=1.0)
    cutmix_max_fraction: float = opt(0.5, "Longest CutMix span, as a share of the window.", minimum=0.0,
                                     maximum=1.0)
    augment_background: bool = opt(False, "Overlay windows of unlabeled soundscapes (the recording conditions "
                                   "of the test set) on training windows; targets unchanged.")
    background_prob: float = opt(0.5, "Share of the batch that gets a background.", minimum=0.0, maximum=1.0)
    background_gain_db: float = opt(10.0, "The background is attenuated by a random 0..this many dB.",
                                    minimum=0.0)
    background_files: int = opt(200, "Unlabeled soundscapes (a seeded sample) cached as backgrounds.", minimum=1)


SECTIONS: dict[str, type] = {
    "testing": TestingConfig,
    "callbacks": CallbacksConfig,
    "paths": PathsConfig,
    "trainer": TrainerConfig,
    "agent": AgentConfig,
    "model": ModelConfig,
    "data": DataConfig,
    "data_process": DataProcessConfig,
    "augmentation": AugmentationConfig,
}

# Keys of the seed project that no longer exist, with what replaced them.
RETIRED_KEYS: dict[tuple[str, str], str] = {
    ("data", "output_dir"): "replaced by [paths] cache_dir",
    ("data", "hash_path"): "replaced by [paths] cache_dir (the cache folder is named by the settings' hash)",
    ("data", "multi_threading"): "removed: preprocessing always runs [data] num_workers processes "
                                 "(num_workers = 1 for a single process)",
    ("data", "train_ratio"): "replaced by [data] n_folds and [data] fold (grouped, stratified folds)",
    ("data", "test_val_ratio"): "replaced by [data] n_folds and [data] fold (grouped, stratified folds)",
    ("data_process", "stats_max_files"): "removed: the statistics now come from every training recording "
                                         "(per-file sums are stored in the cache, so this costs nothing)",
}
SECRET_WORDS = ("token", "api_key", "apikey", "password", "secret")


@dataclass
class Config:
    testing: TestingConfig = field(default_factory=TestingConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    data_process: DataProcessConfig = field(default_factory=DataProcessConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (section -> key -> value), e.g. for checkpoints and trackers."""
        return dataclasses.asdict(self)


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
    else:
        value = text
        if meta.get("choices") and value not in meta["choices"] and value.lower() in meta["choices"]:
            value = value.lower()  # transfer_learning = True works like true
    if meta.get("choices") and value not in meta["choices"]:
        raise fail(f"not an allowed value; allowed: {', '.join(str(c) for c in meta['choices'])}")
    if meta.get("min") is not None and value < meta["min"]:
        raise fail(f"must be >= {meta['min']}")
    if meta.get("max") is not None and value > meta["max"]:
        raise fail(f"must be <= {meta['max']}")
    if meta.get("validator"):
        problem = meta["validator"](value)
        if problem:
            raise fail(problem)
    return value


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
        for key in values:
            _check_key(section, key)
    for section, cls in SECTIONS.items():
        values = raw.get(section, {})
        kwargs = {f.name: _convert(section, f.name, values[f.name], f) for f in fields(cls) if f.name in values}
        sections[section] = cls(**kwargs)
    cfg = Config(**sections)
    _check_cross_fields(cfg)
    return cfg


def _check_cross_fields(cfg: Config) -> None:
    dp, data = cfg.data_process, cfg.data
    if cfg.model.family == "cnn":
        problem = _timm_model_name(cfg.model.type)
        if problem:
            raise ConfigError(f"[model] type = {cfg.model.type!r}: {problem}")
    if cfg.agent.layer_lr_decay != 1.0 and cfg.model.family != "wav2vec2":
        raise ConfigError("[agent] layer_lr_decay applies to [model] family = wav2vec2")
    if data.fold >= data.n_folds:
        raise ConfigError(f"[data] fold = {data.fold}: must be < n_folds ({data.n_folds}); allowed: 0..{data.n_folds - 1}")
    if dp.f_max > dp.sample_rate / 2:
        raise ConfigError(f"[data_process] f_max = {dp.f_max}: must be <= sample_rate / 2 = {dp.sample_rate / 2}")
    if dp.f_min >= dp.f_max:
        raise ConfigError(f"[data_process] f_min = {dp.f_min}: must be < f_max ({dp.f_max})")
    frames = data.window_s * dp.sample_rate / dp.hop_length
    if abs(frames - round(frames)) > 1e-6:
        raise ConfigError(f"[data_process] hop_length = {dp.hop_length}: a {data.window_s}-s window at "
                          f"{dp.sample_rate} Hz is {frames:g} hops; choose a hop that gives whole frames "
                          f"(e.g. 500 or 320 at 32 kHz) so windows do not drift")
    if cfg.callbacks.neptune_logger and not cfg.callbacks.neptune_project and cfg.callbacks.neptune_mode in (
            "async", "sync"):
        raise ConfigError("[callbacks] neptune_project = '': required when neptune_logger = true and neptune_mode "
                          "is async or sync; allowed: 'workspace/project'")


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
            if f.metadata.get("choices"):
                lines.append(f"# choices: {', '.join(str(c) for c in f.metadata['choices'])}")
            lines.append(f"{f.name} = {_format_value(getattr(obj, f.name))}")
        lines.append("")
    return "\n".join(lines)
