"""What the cache does when something fails: a file's own defect is recorded and skipped, the machine's failure
(no space, no memory, no permission, failed I/O) stops the run and is never recorded; concurrent runs take turns
on a cache folder's lock."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
from pathlib import Path
from typing import Any, Iterator

from dataloader.audio import AudioError

log = logging.getLogger(__name__)


class CacheEnvironmentError(RuntimeError):
    """The machine, not a recording, stopped the cache (no space, no memory, no permission, failed I/O); nothing
    was recorded about the file, so the next run retries it."""


# what a manifest "error" of an older version may say about the machine, not the file: retried, never a skip
_ENVIRONMENT_ERRORS = ("OSError", "MemoryError", "PermissionError", "InterruptedError", "BlockingIOError")


def is_environment_error(reason: str) -> bool:
    """Whether a recorded skip reason is really the machine's failure (written by an older version): retry it."""
    return reason.startswith(_ENVIRONMENT_ERRORS)


def failure_record(path: str, exc: BaseException) -> dict[str, Any]:
    """A file's own defect -> ``error`` (recorded, skipped for good); the machine's -> ``fatal`` (the run stops,
    nothing recorded). Decoding defects arrive as :class:`AudioError`; any other ``OSError`` or a
    ``MemoryError`` is the environment (a full disk, no memory, no permission, interrupted I/O)."""
    if isinstance(exc, (OSError, MemoryError)) and not isinstance(exc, AudioError):
        full = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "requested and" in str(exc)
        cause = "no space left on device" if full else f"{type(exc).__name__}: {exc}"
        return {"source": path, "fatal": cause}
    reason = str(exc) if isinstance(exc, AudioError) else f"{type(exc).__name__}: {exc}"
    return {"source": path, "error": reason}


@contextlib.contextmanager
def cache_lock(folder: Path) -> Iterator[None]:
    """Hold the cache folder's lock (``flock`` on ``<folder>/.lock``): one run at a time appends to or prunes the
    manifest, so no run's records are lost to another's rewrite. A waiting run says so; the kernel releases the
    lock of a killed run, so a kill -9 never leaves the cache locked."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another run is preprocessing into %s, waiting for it to finish ...", folder)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
