"""Which calls made the host wait for a CUDA device (``torch.cuda.set_sync_debug_mode``)."""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch


def device_syncs(run: Callable[[], Any]) -> list[str]:
    """Call ``run()`` with CUDA's synchronisation warnings on; return the message of each synchronising call
    (the host waited for the device). Needs CUDA."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [str(w.message) for w in caught if "synchroniz" in str(w.message)]
