"""Joining a Ray cluster, and per-file jobs on it: :class:`RayPool` is :class:`dataloader.worker_pool.WorkerPool`
on the cluster (the cache's preprocessing). The model-holding pipeline on top is :mod:`inference.ray_engine`.
Ray is imported only when a cluster is asked for.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Iterator, Optional

log = logging.getLogger(__name__)
# a task re-run / an actor restarted after its worker or node died; bounded, so that a recording that crashes its
# decoder (a segfault is a worker's death, not an exception) cannot be retried forever
RETRIES = 20


def connect(address: str, num_cpus: Optional[int] = None) -> dict[str, float]:
    """Join the cluster ``address`` (``auto``: ``RAY_ADDRESS`` or a cluster started on this machine, else a new
    local one with ``num_cpus``); returns the cluster's resources."""
    import ray  # noqa: PLC0415

    if not ray.is_initialized():
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING, "include_dashboard": False}
        if address == "auto" and not os.environ.get("RAY_ADDRESS"):
            try:
                ray.init(address="auto", **quiet)
            except ConnectionError:
                log.info("ray: no running cluster found; starting a local one")
                ray.init(num_cpus=num_cpus, **quiet)
        else:
            ray.init(address=None if address == "auto" else address, **quiet)
    resources = ray.cluster_resources()
    log.info("ray: %d node(s), %g CPUs, %g GPUs", len([n for n in ray.nodes() if n.get("Alive")]),
             resources.get("CPU", 0), resources.get("GPU", 0))
    return resources


class RayPool:
    """:class:`dataloader.worker_pool.WorkerPool` on the cluster: ``fn(*task)`` for every task as Ray tasks (one
    CPU slot each, at most ``in_flight`` queued), each worker process initialised once by ``initializer(*initargs)``;
    a task whose worker or node dies is re-run (up to ``RETRIES`` times). Same ``run`` as the pool's."""

    def __init__(self, initializer: Callable[..., None], initargs: tuple, in_flight: int = 0):
        import ray  # noqa: PLC0415

        self._initializer, self._initargs = initializer, initargs
        self.in_flight = in_flight or max(2, int(2 * ray.cluster_resources().get("CPU", 1)))

    def __enter__(self) -> "RayPool":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, fn: Callable[..., dict[str, Any]], tasks: list[tuple], desc: str) -> Iterator[dict[str, Any]]:
        """Yield ``fn(*task)`` for every task, in completion order, with a tqdm bar."""
        import ray  # noqa: PLC0415
        from tqdm import tqdm  # noqa: PLC0415

        remote = ray.remote(num_cpus=1, max_retries=RETRIES)(_pooled_task)
        todo, pending = iter(tasks), {}
        with tqdm(total=len(tasks), desc=desc, unit="file", mininterval=1.0) as bar:
            while True:
                for task in todo:
                    pending[remote.remote(self._initializer, self._initargs, fn, task)] = task
                    if len(pending) >= self.in_flight:
                        break
                if not pending:
                    return
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    del pending[ref]
                    bar.update()
                    yield ray.get(ref)


_POOL_READY: set[tuple[Any, ...]] = set()


def _pooled_task(initializer: Callable[..., None], initargs: tuple, fn: Callable[..., dict[str, Any]],
                 task: tuple) -> dict[str, Any]:
    """One :class:`RayPool` task: the worker initialised on its first task, then ``fn(*task)``."""
    key = (initializer.__module__, initializer.__qualname__, repr(initargs))
    if key not in _POOL_READY:
        initializer(*initargs)
        _POOL_READY.add(key)
    return fn(*task)
