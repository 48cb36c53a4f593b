"""The configuration schema: one dataclass per INI section, each field with its type, default, help, static
choices and range. Pure data: it imports nothing of the project (nor torch), so every layer can take its section
class as a type. Values whose allowed set comes from a registry name it (``registry="losses"``); :mod:`training.config`
reads ``config.ini`` into these classes and runs those checks at load time.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional


def opt(default: Any, help: str, choices: Optional[Iterable[str]] = None, minimum: Optional[float] = None,
        maximum: Optional[float] = None, registry: Optional[str] = None) -> Any:
    """A dataclass field carrying its documentation and validation rules as metadata. ``registry`` names the
    list of allowed values that only exist once the project's registries are loaded (losses, model families,
    data sources, timm models, ...): :mod:`training.config` checks the value against it at load time, after
    ``choices`` (static extra values such as ``auto``)."""
    meta = {"help": help, "choices": tuple(choices) if choices else None, "min": minimum, "max": maximum,
            "registry": registry}
    return field(default=default, metadata=meta)


@dataclass
class TestingConfig:
    testing: bool = opt(False, "Quick run: a seeded sample of recordings, a small model, few epochs.")
    data_samples_for_testing: int = opt(60, "Recordings used in testing mode (seeded, keeps several classes).",
                                        minimum=4)
    testing_model: str = opt("mobilenetv3_small_050", "timm model used in testing mode.",
                             registry="timm_models")
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
                                     "loss: lower is better; soundscape_val_score: the labelled soundscape windows "
                                     "held out, BirdCLEF 2026; epoch: the last epoch, no selection on the validation "
                                     "set, for cross-validation where the validation fold is the test fold).",
                                     choices=("val_score", "val_loss", "soundscape_val_score", "epoch"))
    model_checkpoint_verbose: bool = opt(True, "Log each time a new best checkpoint is written.")
    mlflow_logger: bool = opt(False, "Log params, metrics and curves to MLflow.")
    mlflow_tracking_uri: str = opt("", "MLflow tracking URI (e.g. http://host:5000); empty = a local store in "
                                   "<runs_dir>/mlruns.")
    mlflow_experiment: str = opt("birdclef", "MLflow experiment name.")
    checkpoint_top_k: int = opt(1, "Keep the k best checkpoints (best.pt is the best; others top-<rank>.pt).",
                                minimum=1)


@dataclass
class PathsConfig:
    data_dir: str = opt("", "Data folder: Kaggle BirdCLEF data (what ./download_data.sh fills), or your own for "
                        "source = folder | csv; empty = data/<[data] competition>.")
    demo_dir: str = opt("data/demo", "Where the embedded demo dataset is generated.")
    cache_dir: str = opt("cache", "Preprocessed mel cache; one sub-folder per hash of [data_process].")
    runs_dir: str = opt("runs", "One folder per run: resolved config, log, metrics, checkpoints, summary.")
    submissions_dir: str = opt("submissions", "Where submission CSVs are written.")


@dataclass
class TrainerConfig:
    seed: int = opt(42, "Global seed: Python, NumPy, torch, DataLoader workers, augmentation, initial weights (the "
                    "split and the data's samples: [data] split_seed).")
    batch_size: int = opt(32, "Training batch size (validation uses twice this).", minimum=1)
    batch_size_cuda: int = opt(256, "Training batch size on CUDA (batch_size starves a GPU): capped so an epoch keeps "
                               "at least 32 optimizer steps (a small dataset such as the demo keeps batch_size), the "
                               "learning rates scaled by [agent] lr_scaling; 0 = batch_size on every device.",
                               minimum=0)
    num_workers: int = opt(0, "DataLoader worker processes (crops are memory-mapped slices, 0 is usually "
                           "fastest on CPU).", minimum=0)
    n_epochs: int = opt(30, "Training epochs.", minimum=1)
    device: str = opt("auto", "Where to train: auto picks cuda when available.", choices=("auto", "cpu", "cuda"))
    channels_last: bool = opt(True, "channels_last memory format (faster for CNNs on CPU as well as GPU).")
    threads: int = opt(0, "torch intra-op threads; 0 = one per available core.", minimum=0)
    amp: str = opt("false", "Mixed precision (bf16 autocast where supported, else fp16 with a grad scaler; the loss "
                   "stays float32): true, false, or auto = on CUDA only. Off by default: on the demo (5 seeds, CPU "
                   "bf16) it kept val_score but lost 0.024 of soundscape score on average (lower in 4 of 5 seeds); "
                   "on CUDA, float32 convolutions already run on TF32 tensor cores.",
                   choices=("auto", "true", "false"))
    compile: bool = opt(False, "torch.compile the model (pays a compile time up front, logged apart from the epochs'"
                        " steady speed).")
    compile_mode: str = opt("auto", "torch.compile mode: auto = reduce-overhead on CUDA (CUDA graphs: the launch "
                            "overhead of many small kernels removed) and default on CPU; with compile on, the last "
                            "partial training batch of each epoch is dropped so shapes stay static.",
                            choices=("auto", "default", "reduce-overhead", "max-autotune",
                                     "max-autotune-no-cudagraphs"))
    grad_clip: float = opt(0.0, "Clip the gradient norm to this value (0 = off).", minimum=0.0)
    accumulate_steps: int = opt(1, "Optimizer step every this many batches (gradient accumulation).", minimum=1)
    ema_decay: float = opt(0.0, "Exponential moving average of the weights (e.g. 0.999): validation, checkpoints and "
                           "predictions use the average; 0 = off.", minimum=0.0, maximum=0.99999)
    precise_bn_batches: int = opt(8, "Precise BN: before each validation, batch-norm statistics are recomputed as "
                                  "plain averages over this many clean (unaugmented) training batches, so validation "
                                  "and the saved checkpoint do not use statistics of augmented batches (measured: with "
                                  "beta mixup it removed ESC-50's validation-loss spikes; alone it took a small binary "
                                  "job from 0.41 to 0.95 accuracy); 0 = off.",
                                  minimum=0)
    early_stopping_patience: int = opt(0, "Stop when the monitored metric has not improved for this many epochs "
                                       "(0 = never).", minimum=0)
    overfit_batch: int = opt(0, "Sanity check before training: this many steps on one training batch; the run "
                             "fails unless the loss falls to a tenth (0 = off).", minimum=0)
    resume: str = opt("", "Resume training: a checkpoint path (e.g. runs/<id>/checkpoints/last.pt), 'auto' = the "
                      "newest last.pt under runs_dir, or empty for a fresh start.")


@dataclass
class AgentConfig:
    lr_decay: bool = opt(True, "Use a learning-rate scheduler.")
    lr_decay_type: str = opt("cosine", "Scheduler: cosine (linear warm-up from lr_start to lr_warmup_end, then "
                             "cosine to lr_end), exponential (lr_warmup_end * exp_gamma^epoch), step "
                             "(x step_gamma every step_epochs), onecycle, plateau (x plateau_factor after "
                             "plateau_patience epochs without a better val_score).",
                             registry="schedulers")
    lr_start: float = opt(1e-4, "Learning rate at the first step.", minimum=0.0)
    lr_warmup_end: float = opt(2e-3, "Peak learning rate, reached at the end of the warm-up.", minimum=0.0)
    lr_end: float = opt(1e-5, "Learning rate at the last step (cosine).", minimum=0.0)
    lr_scaling: str = opt("sqrt", "When a run trains with another batch than [trainer] batch_size (batch_size_cuda on "
                          "a GPU), lr_start, lr_warmup_end and lr_end are scaled by (batch / batch_size)^0.5 (sqrt, "
                          "for Adam-type optimizers) or batch / batch_size (linear, for SGD); none = as written.",
                          choices=("sqrt", "linear", "none"))
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
                    registry="losses")
    optimizer: str = opt("adamw", "Optimizer: a name of factory.list_optimizers().",
                         registry="optimizers")
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
    distill_teacher: str = opt("", "Knowledge distillation: a teacher checkpoint of this pipeline (e.g. a head on "
                               "BirdNET or Perch embeddings trained on the same classes), or an embedding model "
                               "(birdnet, perch, onnx; <model>:<path> for its file) whose own classes are mapped onto "
                               "the run's by eBird code or scientific name (the map is written to the run folder); "
                               "its probabilities for each training recording (the max over its 5-s rows) join the "
                               "loss as soft targets. Empty = off.")
    distill_weight: float = opt(0.5, "Weight of the teacher's soft targets in the loss (the labels get 1 - this).",
                                minimum=0.0, maximum=1.0)
    distill_temperature: float = opt(2.0, "Temperature of the distillation (logits / T; the soft term is scaled by "
                                     "T²).", minimum=0.1)
    distill_embedding: str = opt("", "Embedding distillation: a foundation model (birdnet, perch, onnx; <model>:<path> "
                                 "for its file) whose embedding of each training row (cached like mels, standardised "
                                 "per dimension) the student regresses from its pooled features through a linear "
                                 "projection used in training only (the exported model is unchanged); a mixed input "
                                 "(mixup, cutmix, soundscape mixing) has no embedding to learn and is left out of "
                                 "this term. Needs a timm CNN with a linear head. Empty = off.")
    distill_embedding_weight: float = opt(1.0, "Weight of the embedding regression (mean squared error of the "
                                          "standardised embedding) added to the loss.", minimum=0.0)


@dataclass
class ModelConfig:
    family: str = opt("cnn", "cnn = a timm network on mel spectrograms; wav2vec2 = a transformers Wav2Vec2 on raw "
                      "16 kHz waveforms (from a waveform cache); tiny = the microcontroller CNN (tiny_dscnn, no "
                      "pretrained weights); embedding = a linear or MLP head on foundation-model embeddings (BirdNET, "
                      "Perch); any family of factory.list_families().", registry="families")
    type: str = opt("efficientnet_b0", "cnn: any timm model name, built with a new head. wav2vec2: a Hugging Face "
                    "name (e.g. facebook/wav2vec2-base) or a local save_pretrained folder. embedding: the embedding "
                    "model (birdnet, perch, onnx).")
    transfer_learning: str = opt("auto", "Pretrained ImageNet weights: auto = use them when available (local "
                                 "file, timm/HF cache, or hub when online), otherwise warn and start from random "
                                 "weights; true = insist and fail fast; false = random weights.",
                                 choices=("auto", "true", "false"))
    pretrained_path: str = opt("", "Local .safetensors/.pth/.bin weights for the backbone (how Kaggle notebooks "
                               "run offline); empty = timm/HF cache.")
    drop_rate: float = opt(0.2, "Dropout before the classifier.", minimum=0.0, maximum=1.0)
    drop_path_rate: float = opt(0.1, "Stochastic depth rate.", minimum=0.0, maximum=1.0)
    head: str = opt("linear", "Classifier head: linear (timm's, on pooled features), sed (frame-wise logits "
                    "with attention pooling over time, as the BirdCLEF SED solutions), or mlp (one hidden layer; "
                    "embedding family). Each family allows its own.", choices=("linear", "sed", "mlp"))
    in_chans: int = opt(1, "Input channels of the network: 1 (the stem adapted to the mel), or 3 (the mel "
                        "repeated, keeping an RGB-pretrained stem as it is).", choices=(1, 3))
    freeze_feature_encoder: bool = opt(True, "wav2vec2: keep the convolutional feature encoder frozen.")


@dataclass
class DataConfig:
    source: str = opt("auto", "auto = Kaggle BirdCLEF data when data_dir holds it (any edition), otherwise the demo; "
                      "birdclef = insist on Kaggle data; demo = always the embedded demo; folder = "
                      "data_dir/<class>/*.wav|ogg|flac|mp3; csv = a table of path,label[,start,end][,split]"
                      "[,group] (labels_csv).", registry="sources")
    competition: str = opt("birdclef-2024", "The Kaggle competition: the default data_dir (data/<slug>), the slug "
                           "./download_data.sh fetches, and its test-set size and time limit.",
                           registry="competitions")
    edition: str = opt("auto", "BirdCLEF file layout of data_dir: auto = recognised from the files (train_metadata.csv "
                       "+ eBird_Taxonomy_v2021.csv = 2024; train.csv + taxonomy.csv = 2025, + "
                       "train_soundscapes_labels.csv = 2026).", choices=("auto",), registry="editions")
    soundscape_labels: str = opt("both", "Labelled train soundscape windows (2026): both = the files of the other "
                                 "folds train, those of [data] fold form a soundscape validation set scored each "
                                 "epoch (soundscape_val_score); train = all train; val = all validate; off = unused.",
                                 choices=("both", "train", "val", "off"))
    min_rating: float = opt(0.0, "Recordings rated below this (xeno-canto's 0.5-5 stars) are left out, and the "
                            "run reports how many per class; 0 = keep all. Unrated recordings (rating 0: every "
                            "iNat and CSA one) are always kept.", minimum=0.0, maximum=5.0)
    allow_outside_paths: bool = opt(False, "csv source: allow paths in the table (audio, Raven tables) outside its "
                                    "folder and data_dir (refused by default, with the line number).")
    labels_csv: str = opt("", "csv source: the table (paths relative to its folder); empty = data_dir/labels.csv. "
                          "Labels may be several, separated by ';'. With start,end columns each row is an event.")
    task: str = opt("multilabel", "multilabel = sigmoid per class (BirdCLEF); multiclass = one class per example, "
                    "softmax + cross-entropy; binary = one output, positive_class vs the rest; events = per-frame "
                    "targets (classes x event_bins) for the sed head.", registry="tasks")
    positive_class: str = opt("", "binary: the class predicted as 1 (empty = the rarer class).")
    split: str = opt("kfold", "kfold = n_folds grouped, stratified folds, fold validates; holdout = train / val / "
                     "test by train_ratio and test_val_ratio (grouped, stratified, seeded). A csv split column "
                     "(train/val/test) overrides both.", choices=("kfold", "holdout"))
    train_ratio: float = opt(0.8, "holdout: share of recordings (groups) for training.", minimum=0.05, maximum=0.95)
    test_val_ratio: float = opt(0.5, "holdout: share of the rest that goes to test (the remainder validates).",
                                minimum=0.0, maximum=1.0)
    balance: str = opt("none", "Class imbalance: downsample = drop training recordings of larger classes down to "
                       "the smallest (seeded); weights = loss weights count^-1 (binary: pos_weight); none.",
                       choices=("none", "downsample", "weights"))
    min_duration_quantile: float = opt(0.0, "Recordings shorter than this quantile of the training durations are "
                                       "left out as outliers (0 = keep all).", minimum=0.0, maximum=0.5)
    max_duration_quantile: float = opt(1.0, "Recordings longer than this quantile are left out (1 = keep all).",
                                       minimum=0.5, maximum=1.0)
    pseudo_labels: str = opt("", "Soft pseudo-labels to train on as well: a CSV written by predict.py over unlabeled "
                             "soundscapes (row_id = <stem>_<end second>, one probability column per species); its "
                             "windows join the training split only, with those probabilities as targets. Empty = off.")
    pseudo_audio_dir: str = opt("", "Where the pseudo-labelled soundscapes are (default: the source's soundscape "
                              "folder, unlabeled_soundscapes or train_soundscapes).")
    pseudo_min_prob: float = opt(0.5, "Pseudo-labelled windows whose highest probability is below this are left out.",
                                 minimum=0.0, maximum=1.0)
    event_bins: int = opt(10, "events: time bins of each window's targets and predictions.", minimum=1)
    background_label: str = opt("background", "events: the label of event-free clips (used as negatives, not a "
                                "class).")
    demo_seed: int = opt(2024, "Seed of the generated demo dataset.")
    demo_edition: str = opt("2024", "Layout of the generated demo: 2024 (train_metadata.csv, unlabeled_soundscapes), "
                            "2025 (train.csv + taxonomy.csv, numeric iNat ids among the labels, train_soundscapes) "
                            "or 2026 (2025 + train_soundscapes_labels.csv and classes heard only in soundscapes).",
                            registry="editions")
    demo_scale: float = opt(1.0, "Size of the demo: recordings per species x this (1.0 = ~390 recordings).",
                            minimum=0.05, maximum=10.0)
    demo_unlabeled: int = opt(0, "Unlabeled soundscapes of the demo (0 = the layout's few; self-training wants a "
                              "pool: e.g. 60, written on every core).", minimum=0)
    n_folds: int = opt(5, "Grouped, stratified folds.", minimum=2)
    fold: int = opt(0, "Fold used for validation (0 .. n_folds-1).", minimum=0)
    split_seed: int = opt(42, "Seed of the data's split and samples (the folds or holdout, the training cap, "
                          "downsampling, testing mode's recordings, the labelled soundscape windows' folds), apart "
                          "from [trainer] seed: runs that differ only in their training seed (an ensemble of seeds, "
                          "a self-training round's students) split the data the same way, so each validates on the "
                          "same recordings and none trains on another's validation data.")
    min_samples_in_class: int = opt(1, "Classes with fewer recordings are left out of training.", minimum=1)
    shuffle: bool = opt(True, "Shuffle the training set every epoch.")
    num_workers: int = opt(2, "Processes used for preprocessing.", minimum=1)
    ray: str = opt("", "Preprocess on a Ray cluster instead (every node sees the audio and the cache at the same "
                   "paths): auto = RAY_ADDRESS, a cluster started on this machine, else a local one; or host:port. "
                   "Empty = num_workers processes here.")
    window_s: float = opt(5.0, "Window length in seconds (training crops and submission rows).", minimum=0.5)
    crop: str = opt("random", "Training window: random crop, the first window (calls cluster near the start "
                    "of xeno-canto recordings), or chunks = every recording cut into consecutive window_s "
                    "chunks, each an example (a last partial chunk counts when at least half full).",
                    choices=("random", "first", "chunks"))
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
    mixup_kind: str = opt("auto", "How a partner is mixed in: overlay = the two sounds added (max of the dB mels), "
                          "targets united (multi-label: species overlap in soundscapes); beta = mixup (Zhang et al.): "
                          "x = λ a + (1 - λ) b and targets mixed alike, λ ~ Beta(mixup_alpha, mixup_alpha) "
                          "(one label per clip); auto = overlay for multilabel and events, beta for multiclass and "
                          "binary (the resolved config in the run folder says which).",
                          choices=("auto", "overlay", "beta"))
    mixup_alpha: float = opt(0.4, "beta mixup: the Beta distribution's parameter (small = mostly one clip).",
                             minimum=0.01)
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
    augment_soundscape_mix: bool = opt(False, "Blend training examples with soundscape chunks that carry labels: "
                                       "the pseudo-labelled windows of [data] pseudo_labels (self-training) and the "
                                       "labelled train soundscape windows (2026); the chunk's targets join the "
                                       "example's (the 2025 winner mixed every example 50/50 with a pseudo-labelled "
                                       "soundscape).")
    soundscape_mix_prob: float = opt(1.0, "Share of the batch that gets a soundscape chunk.", minimum=0.0,
                                     maximum=1.0)
    soundscape_mix_weight: float = opt(0.5, "The chunk's amplitude share of the blend (0.5 = 50/50; on dB mels each "
                                       "part is attenuated by its share, then the sounds added).", minimum=0.0,
                                       maximum=1.0)
    soundscape_mix_cap: float = opt(1.0, "Largest sum of targets a chunk may add (its targets scaled down to it).",
                                    minimum=0.0)




@dataclass
class SelfTrainingConfig:
    rounds: int = opt(0, "Self-training rounds after the teacher (python train_classifier.py --rounds N): each round "
                      "pseudo-labels the pool with the previous round's models and trains students on the labels and "
                      "those soft targets; 0 = off (one ordinary run).", minimum=0)
    teacher: str = opt("", "Round 0, the first teacher: a checkpoint of this pipeline (.pt / .onnx / .xml, e.g. a head "
                       "on BirdNET embeddings), or an embedding model whose own classes are mapped onto the run's by "
                       "eBird code or scientific name (birdnet, perch; perch:<path> for its file: Kaggle Models' "
                       "SavedModel folder, a .tflite or an .onnx conversion); empty = round 0 trains a model on "
                       "the labels alone.")
    pool_dir: str = opt("", "The unlabeled pool: a folder of recordings (empty = the source's soundscapes: "
                        "unlabeled_soundscapes for 2024, train_soundscapes for 2025/2026).")
    pool_files: int = opt(0, "Pool recordings used (a seeded sample; 0 = all).", minimum=0)
    folds: int = opt(2, "Out-of-fold pseudo-labels: the pool is split into this many folds by recording, each round "
                     "trains one student per fold on the others, and a recording's pseudo-labels come only from the "
                     "student that did not train on it; 1 (one round only) = one student on the whole pool, as in "
                     "distillation on mixed views.", minimum=1)
    power: str = opt("1.0", "Power transform of the soft targets, per round (comma-separated, round 1 first; the last "
                     "applies to later rounds): target = probability ** power (> 1 pushes uncertain windows towards 0, "
                     "as the 2025 winner's noisy-student rounds did).")
    cap: float = opt(1.0, "Highest soft target a pseudo-label may carry (1 = no cap).", minimum=0.0, maximum=1.0)
    min_prob: float = opt(0.0, "Pool windows whose highest pseudo-label is below this are left out (0 = every window "
                          "trains: a window where nothing calls teaches negatives).", minimum=0.0, maximum=1.0)
    distill: bool = opt(False, "Students also learn the round-0 teacher's soft targets on the labelled recordings "
                        "([agent] distill_teacher = the teacher, with distill_weight and distill_temperature), not "
                        "only on the pool; the teacher predicts every training recording once per student.")
    teacher_blend: str = opt("mean", "With labelled soundscape windows (2026), each round's students are also scored "
                             "blended with the raw teacher (predict.py --blend mean|rank --weights), the teacher's "
                             "share chosen on those windows and the score cross-fitted by recording; the loop writes "
                             "blend.json with the predict.py command of the last round's blend; off = students only. "
                             "mean keeps a confident teacher's margins (2026 demo: 0.999 against rank's 0.960).",
                             choices=("off", "mean", "rank"))


@dataclass
class EvaluationConfig:
    threshold: float = opt(0.5, "binary / multilabel / events: probability above which a class counts as present.",
                           minimum=0.0, maximum=1.0)
    onset_tolerance_s: float = opt(0.5, "events: a predicted event matches a reference one of its class when their "
                                   "onsets differ by at most this (and they overlap).", minimum=0.0)
    min_event_s: float = opt(0.0, "events: predicted events shorter than this are dropped.", minimum=0.0)
    detection_precision: float = opt(0.9, "Per-class thresholds written to the run folder (thresholds.csv, what "
                                     "detect.py uses): the lowest score reaching this precision on the validation "
                                     "split, per class.", minimum=0.0, maximum=1.0)


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
    "self_training": SelfTrainingConfig,
    "evaluation": EvaluationConfig,
}


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
    self_training: SelfTrainingConfig = field(default_factory=SelfTrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (section -> key -> value), e.g. for checkpoints and trackers."""
        return asdict(self)
