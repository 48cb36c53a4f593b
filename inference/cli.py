"""What ``predict.py`` and ``detect.py`` share on the command line: the model and audio arguments, the decode-ahead
default and the logging set-up."""
from __future__ import annotations

import argparse
import logging

from inference.backends import OPENVINO_MODES
from inference.file_pipeline import default_decode_threads

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


def decode_threads(args: argparse.Namespace, device: str = "cpu") -> int:
    """``--decode-threads``, or the pipeline's default for ``device`` when 0."""
    return args.decode_threads or default_decode_threads(device)


def setup_logging() -> None:
    """INFO lines with the time and the logger's name, as every command of the project prints them."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
