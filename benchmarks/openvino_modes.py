"""OpenVINO's latency mode (one request on every core) against its throughput mode (streams fed by asynchronous
requests), model calls alone on the same windows, printed as JSON lines (the ratio is throughput / latency, one run).

    python benchmarks/openvino_modes.py [--checkpoint CKPT] [--windows 256] [--batch-size 32] [--repeats 3]

Without ``--checkpoint`` an efficientnet_b0 with random weights and 182 classes stands in (speed does not depend on
the weights); it is exported with ``inference.export`` (parity with PyTorch checked there).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.inference import stand_in_checkpoint  # noqa: E402
from inference.backends import OPENVINO_MODES, load_metadata, openvino_runner  # noqa: E402
from inference.export import export, input_shape  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint")
    p.add_argument("--windows", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.checkpoint) if args.checkpoint else stand_in_checkpoint(Path(tmp) / "stand_in.pt")
        xml = next(Path(r["path"]) for r in export(ckpt, Path(tmp) / "exported") if r["format"] == "openvino")
        x = np.random.default_rng(0).standard_normal((args.windows, *input_shape(load_metadata(xml))))
        x = x.astype(np.float32)
        runners = {mode: openvino_runner(xml, mode=mode) for mode in OPENVINO_MODES}
        speeds: dict[str, float] = {}
        outputs: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):  # interleaved, the best pass counts (a shared machine's speed drifts)
            for mode, run in runners.items():
                run(x[:args.batch_size])  # warm-up
                t0 = time.perf_counter()
                outputs[mode] = np.concatenate([run(x[i:i + args.batch_size])
                                                for i in range(0, args.windows, args.batch_size)])
                speeds[mode] = max(speeds.get(mode, 0.0), args.windows / (time.perf_counter() - t0))
    for mode in OPENVINO_MODES:
        print(json.dumps({"openvino_mode": mode, "windows_per_s": round(speeds[mode], 1),
                          "ratio_to_latency": round(speeds[mode] / speeds["latency"], 2),
                          "max_logit_diff_to_latency": float(np.abs(outputs[mode] - outputs["latency"]).max()),
                          "batch_size": args.batch_size}), flush=True)


if __name__ == "__main__":
    main()
