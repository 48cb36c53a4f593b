"""CPU training-step benchmark: glibc's default large-allocation mmap vs. keeping buffers on the heap.

    python benchmarks/train_step.py [--model efficientnet_b0] [--batch 32] [--steps 5]

Each variant runs in its own process (an allocator setting cannot be undone in-process); prints one JSON
line per variant (seconds and minor page faults per step) and one with the speed-up, measured in this run.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(model_name: str, batch: int, steps: int, keep_on_heap: bool) -> dict:
    """Seconds and minor page faults per training step (after 2 warm-up steps)."""
    sys.path.insert(0, str(ROOT))
    import torch  # noqa: PLC0415

    from factory.models import create_model  # noqa: PLC0415
    from utils.runtime import available_cores, keep_large_allocations_on_heap  # noqa: PLC0415

    if keep_on_heap:
        keep_large_allocations_on_heap()
    torch.set_num_threads(available_cores())
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=182, in_chans=1).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    x = torch.randn(batch, 1, 128, 320).contiguous(memory_format=torch.channels_last)
    y = torch.rand(batch, 182)
    for i in range(steps + 2):
        if i == 2:
            t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"variant": "heap" if keep_on_heap else "default_malloc", "model": model_name, "batch": batch,
            "step_s": round((time.perf_counter() - t0) / steps, 4),
            "sys_s_per_step": round((r1.ru_stime - r0.ru_stime) / steps, 4),
            "page_faults_per_step": int((r1.ru_minflt - r0.ru_minflt) / steps)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="efficientnet_b0")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--variant", choices=("default_malloc", "heap"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.variant:
        print(json.dumps(measure(args.model, args.batch, args.steps, args.variant == "heap")))
        return
    results = {}
    for variant in ("default_malloc", "heap"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--model", args.model, "--batch",
                              str(args.batch), "--steps", str(args.steps)], capture_output=True, text=True,
                             check=True).stdout.strip().splitlines()[-1]
        results[variant] = json.loads(out)
        print(out, flush=True)
    print(json.dumps({"speedup_heap_vs_default": round(results["default_malloc"]["step_s"] /
                                                      results["heap"]["step_s"], 2)}))


if __name__ == "__main__":
    main()
