"""The windows models see at inference: ensemble members grouped by front end, and the one window cutter.

An :class:`InputGroup` is the front end (settings, input length, padding, statistics) that ensemble members share:
its windows are cut once for all of them. :func:`cut_windows` cuts a recording's windows from its feature blocks
while they pass (a long file's mel is never held whole, unless ``per_clip`` statistics need all of it): the
Kaggle table (``predict_folder``), the detections (``score_folder``), calibration and teacher targets all cut
through it, and it calls the front end's own :meth:`~dataloader.frontend.FrontEnd.window`, the crop / pad /
standardise that training uses.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Optional

import numpy as np

from dataloader.audio import MemoryReader, MonoReader
from dataloader.frontend import STORE_DTYPE, FrontEnd
from dataloader.standardize import Standardizer


def window_starts(duration_s: float, window_s: float, hop_s: float) -> np.ndarray:
    """Start seconds of the windows of a recording: every ``hop_s`` from 0, as long as a window still starts
    inside the recording's last ``window_s`` (the last one may run past the end and is padded, as the submission's
    last row is): ``max(1, ceil((duration - 0.1 - window) / hop) + 1)`` windows, which for ``hop_s = window_s``
    are exactly the submission's rows."""
    if hop_s <= 0 or window_s <= 0:
        raise ValueError(f"hop {hop_s} s and window {window_s} s must be positive")
    count = max(1, math.ceil((duration_s - 0.1 - window_s) / hop_s - 1e-9) + 1)
    return np.round(np.arange(count) * hop_s, 6)


@dataclass
class InputGroup:
    """Ensemble members that share a front end (settings, input length, padding): their windows are cut once."""

    frontend: FrontEnd
    standardizer: Standardizer  # the first member's; the others map onto their own (conversion_from)
    pad_mode: str
    frames: int  # one row (a submission row, or a detection window)
    input_frames: int  # what the members take (a context window when longer than a row)

    @property
    def context(self) -> int:
        """Frames a member's input has beyond a row (split before and after it, padded with silence)."""
        return self.input_frames - self.frames

    def first_frames(self, starts_s: np.ndarray) -> np.ndarray:
        """The first feature frame of the input window of each row starting at ``starts_s`` seconds."""
        return np.rint(np.asarray(starts_s) * self.frontend.frames_per_second).astype(int) - self.context // 2

    def streams_blocks(self) -> bool:
        """Whether windows can be cut while the feature blocks pass (``per_clip`` statistics need the whole file)."""
        return self.standardizer.mode != "per_clip"


def cut_windows(group: InputGroup, reader: MonoReader | MemoryReader, starts_s: np.ndarray, chunk: int,
                limit_s: Optional[float] = None) -> Iterator[np.ndarray]:
    """The model inputs of the rows starting at ``starts_s``, ``(n, 1, rows, input_frames)`` float32, in chunks of
    at most ``chunk`` windows, cut from the feature blocks of ``reader`` (its first ``limit_s`` seconds) as they are
    computed. A window past the end is padded by the group's ``pad_mode``; a context window with silence."""
    fe, frames = group.frontend, group.input_frames
    pad_mode = "silence" if group.context else group.pad_mode
    first = group.first_frames(starts_s)
    if group.streams_blocks():
        _, raw = fe.feature_blocks(reader, limit_s)
        blocks: Iterator[np.ndarray] = (block.astype(STORE_DTYPE) for block in raw)  # what training saw
        clip: tuple = ()
    else:
        features, _ = fe.features_from(reader, limit_s)
        blocks, clip = iter([features]), group.standardizer.clip_stats(features)
    buffer = np.zeros((fe.rows, 0), dtype=STORE_DTYPE)
    offset, exhausted = 0, False  # offset: the file frame of buffer[:, 0]
    out: list[np.ndarray] = []
    later = np.minimum.accumulate(first[::-1])[::-1]  # the first frame any window from k on still needs
    for k, start in enumerate(first):
        while not exhausted and offset + buffer.shape[1] < start + frames:
            block = next(blocks, None)
            if block is None:
                exhausted = True
            else:
                buffer = block if not buffer.shape[1] else np.concatenate([buffer, block], axis=1)
        out.append(fe.window(buffer, start - offset, frames, group.standardizer, clip, pad_mode))
        if len(out) == chunk or k == len(first) - 1:
            yield np.stack(out)[:, None]
            out = []
        if k + 1 < len(first):  # frames before every later window are no longer needed
            drop = max(0, min(int(later[k + 1]) - offset, buffer.shape[1]))
            buffer, offset = buffer[:, drop:], offset + drop
