"""A pool of worker processes for per-file jobs: bounded in flight, crash-tolerant, with a tqdm bar.

Forked on Linux, so starting it costs milliseconds (the workers must not touch torch's thread pools: the
cache builder's do not import torch); spawned elsewhere. A worker that dies (a decoder segfault) costs only
the file it was processing: the pool restarts and the suspects re-run one at a time.
"""
from __future__ import annotations

import itertools
import multiprocessing
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Optional

from tqdm import tqdm

IN_FLIGHT_PER_WORKER = 4  # queued tasks per worker: enough to never idle, few enough to bound memory


def pool_context() -> multiprocessing.context.BaseContext:
    """fork on Linux, spawn elsewhere."""
    return multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


class WorkerPool:
    """``workers`` processes initialised by ``initializer(*initargs)`` (the calling process itself when
    ``workers`` is 1). Tasks are tuples whose first item names the file (for the crash report); results are
    dicts, optionally with ``seconds`` of audio for the bar's audio-hours/s."""

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple):
        self.workers, self._initializer, self._initargs = workers, initializer, initargs
        self._pool: Optional[ProcessPoolExecutor] = None
        if workers <= 1:
            initializer(*initargs, limit_threads=False)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=pool_context(), initializer=self._initializer,
                                             initargs=self._initargs)
            self._pool.submit(int).result()  # start every worker now, before progress-bar threads exist
        return self._pool

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(self, fn: Callable[..., dict[str, Any]], tasks: list[tuple], desc: str) -> Iterator[dict[str, Any]]:
        """Yield ``fn(*task)`` for every task (completion order) with a tqdm bar of files/s and audio-hours/s."""
        if not tasks:
            return
        results = (fn(*t) for t in tasks) if self.workers <= 1 else self._parallel(fn, tasks)
        with tqdm(total=len(tasks), desc=desc, unit="file", mininterval=1.0) as bar:
            audio_s = 0.0
            for res in results:
                audio_s += res.get("seconds", 0.0)
                bar.set_postfix_str(f"{audio_s / 3600 / max(bar.format_dict['elapsed'], 1e-9):.3f} audio-h/s",
                                    refresh=False)
                bar.update()
                yield res

    def _parallel(self, fn: Callable[..., dict[str, Any]], tasks: list[tuple]) -> Iterator[dict[str, Any]]:
        todo, pending = iter(tasks), {}
        suspects: list[tuple] = []
        pool = self._start()
        while True:
            for task in itertools.islice(todo, self.workers * IN_FLIGHT_PER_WORKER - len(pending)):
                pending[pool.submit(fn, *task)] = task
            if not pending:
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            try:
                results = [f.result() for f in finished]
            except BrokenProcessPool:
                suspects.extend(pending.values())  # one of these killed its worker; find it alone
                pending.clear()
                self._close()
                pool = self._start()
                continue
            for f in finished:
                del pending[f]
            yield from results
        yield from (self._alone(fn, task) for task in suspects)

    def _alone(self, fn: Callable[..., dict[str, Any]], task: tuple) -> dict[str, Any]:
        """Run one task by itself; if its worker dies, that file is the culprit."""
        try:
            return self._start().submit(fn, *task).result()
        except BrokenProcessPool:
            self._close()
            return {"source": task[0], "error": "worker process died while decoding (crash in the decoder?)"}
