"""An exponential moving average of a model's weights that never reads the device during training."""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class WeightEMA(AveragedModel):
    """``AveragedModel`` with an EMA of the parameters and floating-point buffers (``decay``); integer buffers
    (batch-norm's ``num_batches_tracked``) follow the model's.

    ``AveragedModel.update_parameters`` asks ``n_averaged == 0`` and ``n_averaged > 0`` of its counter, a tensor on
    the model's device: two waits for the GPU at every step. Here the count is mirrored on the host, so an update is
    only device work (one ``_foreach_lerp_``). ``n_averaged`` is still kept (checkpoints store it)."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__(model, use_buffers=True)
        self.decay = decay
        self.updates = 0  # the host's copy of n_averaged

    def sync_count(self) -> None:
        """Read ``n_averaged`` once (after it was loaded from a checkpoint)."""
        self.updates = int(self.n_averaged)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """First call: copy ``model``; later calls: ``avg += (1 - decay) * (model - avg)``."""
        averaged, current = [], []
        for avg, new in zip([*self.module.parameters(), *self.module.buffers()],
                            [*model.parameters(), *model.buffers()]):
            new = new.detach()
            if self.updates == 0 or not avg.is_floating_point():
                avg.copy_(new)
            else:
                averaged.append(avg)
                current.append(new)
        if averaged:
            torch._foreach_lerp_(averaged, current, 1.0 - self.decay)
        self.n_averaged += 1
        self.updates += 1
