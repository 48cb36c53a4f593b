"""What a CPU training step gains from each option, printed as JSON lines (ratios against today's default step,
measured in the same run, each variant in its own process).

    python benchmarks/cpu_train_options.py [--steps 6] [--batch 32] [--variants baseline contiguous ...]

A step is forward, backward and AdamW on a batch of ``--batch`` (1, n_mels, 321) mel windows (5 s at hop 500, the
default front end) with BCE over 182 classes, after warm-up steps (a compiled model's compilation is timed apart,
``warmup_s``). Variants (``baseline`` = ``config.ini``'s ``[trainer]``: efficientnet_b0, channels_last, every core,
eager float32):

- ``contiguous``: channels_last off;
- ``threads_1``: one intra-op thread (a 2-core machine's other core idle);
- ``compile``: ``torch.compile`` (inductor; on CPU it generates C++/OpenMP kernels and fuses element-wise ops into
  oneDNN's convolutions);
- ``bf16``: bfloat16 autocast (fast only on CPUs with bf16 instructions: AVX-512 BF16, AMX);
- ``mels_64``: the same network on 64 mel bands (half the input);
- ``mobilenetv3_large_100``, ``mobilenetv3_small_100``: smaller networks on the same input.

Each row: ``step_s``, ``windows_per_s``, ``ratio`` (baseline step time / this one: > 1 is faster), and the CPU's
vector extensions (``cpu``), since that is what decides which options pay.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "baseline": {},
    "contiguous": {"channels_last": False},
    "threads_1": {"threads": 1},
    "compile": {"compile": True},
    "bf16": {"bf16": True},
    "mels_64": {"n_mels": 64},
    "mobilenetv3_large_100": {"model": "mobilenetv3_large_100"},
    "mobilenetv3_small_100": {"model": "mobilenetv3_small_100"},
}


def cpu_flags() -> str:
    """The vector extensions that decide the CPU's speed: avx2, avx512f, avx512_bf16, amx_bf16."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
    return " ".join(f for f in wanted if f in flags) or "none of " + " ".join(wanted)


def measure(name: str, batch: int, steps: int) -> dict:
    """Seconds per training step of variant ``name`` (in this process)."""
    sys.path.insert(0, str(ROOT))
    import torch  # noqa: PLC0415

    from factory.models import create_model  # noqa: PLC0415
    from utils.runtime import available_cores  # noqa: PLC0415

    opts = {"model": "efficientnet_b0", "channels_last": True, "threads": available_cores(), "compile": False,
            "bf16": False, "n_mels": 128, **VARIANTS[name]}
    torch.set_num_threads(opts["threads"])
    torch.manual_seed(0)
    fmt = torch.channels_last if opts["channels_last"] else torch.contiguous_format
    model = create_model(opts["model"], num_classes=182, in_chans=1).to(memory_format=fmt).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x = torch.randn(batch, 1, opts["n_mels"], 321).contiguous(memory_format=fmt)
    y = torch.rand(batch, 182)
    forward = torch.compile(model) if opts["compile"] else model

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opts["bf16"]):
            logits = forward(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    for _ in range(2):
        step()
    warmup = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    per_step = (time.perf_counter() - t0) / steps
    return {"variant": name, **opts, "batch": batch, "steps": steps, "warmup_s": round(warmup, 2),
            "step_s": round(per_step, 4), "windows_per_s": round(batch / per_step, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--one", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batch, args.steps)))
        return
    names = ["baseline"] + [v for v in args.variants if v != "baseline"]
    base = None
    for name in names:
        done = subprocess.run([sys.executable, __file__, "--one", name, "--batch", str(args.batch), "--steps",
                               str(args.steps)], capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode != 0:
            print(json.dumps({"variant": name, "error": done.stderr.strip().splitlines()[-1][:300]}), flush=True)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        base = base or row["step_s"]
        print(json.dumps({**row, "ratio": round(base / row["step_s"], 3), "cpu": cpu_flags(),
                          "cores": os.cpu_count()}), flush=True)


if __name__ == "__main__":
    main()
