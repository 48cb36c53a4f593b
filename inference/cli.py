"""What ``predict.py``, ``detect.py`` and ``inference.budget`` share on the command line: the model and audio
arguments, the inference tricks, the decode-ahead default and the logging set-up."""
from __future__ import annotations

import argparse
import logging
from typing import Any

from inference.backends import OPENVINO_MODES
from inference.file_pipeline import default_decode_threads
from inference.postprocess import RowWindows
from inference.predict import BLENDS

BACKENDS = ("auto", "torch", "onnx", "openvino")


def add_model_arguments(parser: argparse.ArgumentParser, checkpoint_help: str, audio_help: str, batch_size: int,
                        limit_help: str) -> None:
    """The arguments every inference command takes: models, recordings, backend and its threads and precision,
    windows per model call, decode threads, and a file limit."""
    parser.add_argument("--checkpoint", nargs="+", required=True, help=checkpoint_help)
    parser.add_argument("--audio-dir", required=True, help=audio_help)
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime / OpenVINO threads (0 = their default)")
    parser.add_argument("--precision", default="f32", choices=("f32", "bf16"),
                        help="OpenVINO inference precision (bf16: faster on CPUs with bf16 instructions, not exact)")
    parser.add_argument("--openvino-mode", default="throughput", choices=OPENVINO_MODES, help="OpenVINO: streams "
                        "fed by asynchronous requests (throughput: 1.18x latency's windows/s, benchmarks/"
                        "openvino_modes.py), or one request on every core (latency)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="windows per model call")
    parser.add_argument("--decode-threads", type=int, default=0, help="threads decoding and computing mels ahead of "
                        "the models (0 = half the cores, at least 1)")
    parser.add_argument("--limit", type=int, help=limit_help)


def add_trick_arguments(parser: argparse.ArgumentParser) -> None:
    """The winners' inference tricks (each off by default): the windows of each row, smoothing, peak scaling, the
    members' blend and weights, site and hour priors."""
    parser.add_argument("--smooth", type=int, default=0, help="average each row with its ±K neighbours")
    parser.add_argument("--shift-tta", type=float, default=0.0, metavar="S", help="shift TTA: each row also from "
                        "the windows S seconds before and after it, averaged (0 = off)")
    parser.add_argument("--row-hop", type=float, default=0.0, metavar="S", help="windows every S seconds (a divisor "
                        "of the row); each row the overlap-weighted mean of the windows covering it (0 = off)")
    parser.add_argument("--peak-scale", type=float, default=0.0, metavar="P", help="file-level peak scaling: each "
                        "row times its file's class maximum to the power P (0 = off)")
    parser.add_argument("--blend", default="mean", choices=BLENDS, help="join the members by their probabilities' "
                        "mean, or by the mean of their per-class ranks over every row (rank: calibration-free)")
    parser.add_argument("--weights", type=float, nargs="+", default=[], help="one weight per member, in --checkpoint "
                        "order (default: equal)")
    parser.add_argument("--priors", default="", help="site and hour priors from a labelled-soundscape table (auto = "
                        "the competition's train_soundscapes_labels.csv, 2026); empty = off")
    parser.add_argument("--prior-strength", type=float, default=0.5, help="the power of the priors' rate ratios")


def trick_settings(args: argparse.Namespace, row_s: float) -> dict[str, Any]:
    """:class:`inference.predict.SoundscapePredictor`'s keywords for the tricks of ``args`` (rows of ``row_s``
    seconds); ``ValueError`` when two settings both choose each row's windows."""
    if args.shift_tta and args.row_hop:
        raise ValueError("--shift-tta and --row-hop both choose each row's windows; give one")
    around = RowWindows.shifts(args.shift_tta) if args.shift_tta else RowWindows.hop(row_s, args.row_hop)
    return {"row_windows": around, "smooth": args.smooth, "peak_power": args.peak_scale, "blend": args.blend,
            "weights": args.weights}


def decode_threads(args: argparse.Namespace, device: str = "cpu") -> int:
    """``--decode-threads``, or the pipeline's default for ``device`` when 0."""
    return args.decode_threads or default_decode_threads(device)


def setup_logging() -> None:
    """INFO lines with the time and the logger's name, as every command of the project prints them."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
