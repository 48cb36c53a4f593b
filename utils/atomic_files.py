"""Atomic writes: a file appears under its name only when complete (written as ``<name>.tmp-<pid>``, then renamed),
a failed write leaves nothing behind, and the temporaries of killed writers are told from a live writer's.

The one helper the cache (mels, manifests, sums), the checkpoints and the submission files write through."""
from __future__ import annotations

import itertools
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temporary_path(path: str | Path) -> Path:
    """Where ``path`` is written before it is renamed into place: ``<name>.tmp-<pid>`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield the temporary path to write ``path`` at; when the block ends normally it is renamed onto ``path``
    (readers see the old file or the whole new one), when it raises it is removed and the error goes on."""
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path) -> int:
    """Delete ``*.tmp-<pid>`` files in ``folder`` and its sub-folders whose writer is gone; return how many."""
    removed = 0
    for tmp in itertools.chain(folder.glob("*.tmp-*"), folder.glob("*/*.tmp-*")):
        pid = tmp.name.rsplit(".tmp-", 1)[1]
        if pid.isdigit() and not pid_alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed
