"""The command-line options every archive command shares for archives larger than one machine: a Ray cluster
(:mod:`inference.ray_engine`) or one shard of a job array (:func:`dataloader.audio.shard_files`)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_scale_arguments(parser: argparse.ArgumentParser, merge_command: str) -> None:
    """``--ray``, ``--ray-actors``, ``--ray-gpus-per-actor`` and ``--shard``; ``merge_command`` joins the shards."""
    parser.add_argument("--ray", metavar="ADDRESS", help="run on a Ray cluster: auto (RAY_ADDRESS, a cluster started "
                        "on this machine, else a local one) or host:port")
    parser.add_argument("--ray-actors", type=int, default=0, help="model actors (0 = one per CPU of the cluster; each "
                        "holds half a CPU slot, decoding tasks the other half)")
    parser.add_argument("--ray-gpus-per-actor", type=float, default=0.0, help="GPU share of each model actor")
    parser.add_argument("--shard", metavar="I/N", help=f"only shard I of N of the recordings (by a hash of each "
                        f"path): one task of a job array; {merge_command} joins the shards")


def shard_of(args: argparse.Namespace) -> tuple[int, int] | None:
    """``--shard`` as (i, N), or None."""
    from dataloader.audio import parse_shard  # noqa: PLC0415

    return parse_shard(args.shard) if args.shard else None


def scale_files(args: argparse.Namespace, files: list[Path]) -> list[Path]:
    """The recordings this command processes: all, or its ``--shard``'s."""
    from dataloader.audio import shard_files  # noqa: PLC0415

    shard = shard_of(args)
    return files if shard is None else shard_files(files, args.audio_dir, *shard)
