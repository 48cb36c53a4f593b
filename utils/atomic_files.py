"""Temporary files of atomic writes (``<name>.tmp-<pid>``): telling a live writer's from a dead one's."""
from __future__ import annotations

import itertools
import os
from pathlib import Path


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
