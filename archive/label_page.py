"""A labelling page for archive windows, served on this machine by this command (Python's own HTTP server; no
framework to install, nothing fetched from the internet by the page).

    python -m archive.label_page --db ARCHIVE_DB [--queue hits/hits.csv | --queue ARCHIVE_DB/rounds/round_002/queue.csv]
                                 [--classes owl wren] [--port 8765] [--annotator me]

Each window of the queue (a search's ``hits.csv``, an active-learning round's ``queue.csv``, or any table with a
``window_id`` column; default: the newest round's queue) is shown with its mel spectrogram and an audio player; per
class it is positive, negative or skipped. Keys: space plays, p / n / s answer for the selected class, 1-9 select a
class, c clears, j / k or the arrows move. Every answer is written to the database (a hoplite annotation) when it is
given, so a closed tab or a crash loses nothing; ``/api/export`` (the page's Export link) downloads the labels as
the table the ``csv`` source trains on.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional, Sequence
from urllib.parse import parse_qs, urlparse

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from archive.database import open_archive, settings_of, windows_frame  # noqa: E402
from archive.labels import KINDS, export_labels, label_counts, labels_frame, set_label  # noqa: E402

PAGE = Path(__file__).with_name("static") / "label_page.html"
QUEUE_LIMIT = 500  # windows shown at once


class LabelSession:
    """The database, the queue and the classes behind one page; every database call under one lock (the
    server answers requests on several threads, SQLite wants one writer)."""

    def __init__(self, db_path: str | Path, queue: Optional[str | Path] = None, classes: Sequence[str] = (),
                 annotator: str = "page"):
        self.db = open_archive(db_path)
        self.settings = settings_of(self.db)
        self.lock = threading.Lock()
        self.annotator = annotator
        self.queue = self.load_queue(Path(db_path), queue)
        known = sorted(set(labels_frame(self.db)["label"]))
        self.classes = list(dict.fromkeys([*classes, *known]))
        self._cache: dict[tuple[str, int], bytes] = {}

    def load_queue(self, db_path: Path, queue: Optional[str | Path]) -> pd.DataFrame:
        """The windows to show: the given table's ``window_id`` rows (with its other columns as notes), else the
        newest active-learning round's queue, else the database's first windows."""
        if queue is None:
            rounds = sorted((db_path / "rounds").glob("round_*/queue.csv"))
            queue = rounds[-1] if rounds else None
        if queue is None:
            return windows_frame(self.db).head(QUEUE_LIMIT).assign(note="")
        table = pd.read_csv(queue)
        if "window_id" not in table:
            raise ValueError(f"{queue}: no window_id column (a search's hits.csv or a round's queue.csv has one)")
        table = table.head(QUEUE_LIMIT)
        notes = [", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                           if k in ("rank", "score", "query", "reason")) for row in table.to_dict("records")]
        frame = windows_frame(self.db, table["window_id"].tolist())
        note_of = dict(zip(table["window_id"], notes))
        return frame.assign(note=[note_of[w] for w in frame["window_id"]])

    def state(self) -> dict[str, Any]:
        """What the page draws: classes, queue, each window's answers, counts."""
        with self.lock:
            labels = labels_frame(self.db)
            counts = label_counts(self.db)
        answers: dict[str, dict[str, str]] = {}
        for w, label, kind in zip(labels["window_id"], labels["label"], labels["kind"]):
            answers.setdefault(str(w), {})[label] = kind
        items = [{"window_id": int(r.window_id), "file": r.file, "start_s": float(r.start_s), "end_s": float(r.end_s),
                  "note": r.note} for r in self.queue.itertuples()]
        return {"classes": self.classes, "items": items, "answers": answers, "counts": counts, "kinds": list(KINDS),
                "model": self.settings.model, "window_s": self.settings.window_s}

    def label(self, body: dict[str, Any]) -> dict[str, Any]:
        """Write one answer (``window_id``, ``label``, ``kind``: positive / negative / skip / clear) at once."""
        kind = str(body.get("kind", ""))
        if kind not in (*KINDS, "clear"):
            raise ValueError(f"kind {kind!r}: allowed: {', '.join(KINDS)}, clear")
        label = str(body.get("label", "")).strip()
        with self.lock:
            set_label(self.db, int(body["window_id"]), label, kind, str(body.get("annotator") or self.annotator))
            counts = label_counts(self.db)
        if label not in self.classes:
            self.classes.append(label)
        return {"ok": True, "counts": counts}

    def excerpt(self, window_id: int) -> tuple[Any, int, Any]:
        """(samples, rate, window row) of a queued window."""
        from archive.excerpts import read_excerpt  # noqa: PLC0415

        rows = self.queue[self.queue["window_id"] == window_id]
        if rows.empty:
            with self.lock:
                rows = windows_frame(self.db, [window_id])
        if rows.empty:
            raise KeyError(f"no window {window_id}")
        row = rows.iloc[0]
        samples, sr = read_excerpt(Path(self.settings.audio_root) / row["file"], row["start_s"], row["end_s"])
        return samples, sr, row

    def media(self, kind: str, window_id: int) -> bytes:
        """The window's WAV excerpt (``audio``) or spectrogram PNG (``spectrogram``), made once."""
        from archive.excerpts import PAD_S, spectrogram_png, wav_bytes  # noqa: PLC0415

        key = (kind, window_id)
        if key not in self._cache:
            samples, sr, row = self.excerpt(window_id)
            if kind == "audio":
                self._cache[key] = wav_bytes(samples, sr)
            else:
                start = max(0.0, float(row["start_s"]) - PAD_S)
                self._cache[key] = spectrogram_png(samples, sr, start, (row["start_s"], row["end_s"]),
                                                   f"{row['file']}  {row['start_s']:.1f}-{row['end_s']:.1f} s")
        return self._cache[key]

    def export(self) -> str:
        """The labels as the csv source's table."""
        import tempfile  # noqa: PLC0415

        with self.lock, tempfile.TemporaryDirectory() as tmp:
            export_labels(self.db, Path(tmp) / "labels.csv")
            return (Path(tmp) / "labels.csv").read_text()


def make_handler(session: LabelSession) -> type[BaseHTTPRequestHandler]:
    """The request handler class of a session: a route table of GET and POST paths."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per request is noise here
            return

        def send(self, body: bytes, content_type: str, status: HTTPStatus = HTTPStatus.OK,
                 extra: Optional[dict[str, str]] = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def send_json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
            self.send(json.dumps(value).encode(), "application/json", status)

        def window_arg(self) -> int:
            return int(parse_qs(urlparse(self.path).query)["window"][0])

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            routes: dict[str, Callable[[], None]] = {
                "/": lambda: self.send(PAGE.read_bytes(), "text/html; charset=utf-8"),
                "/api/state": lambda: self.send_json(session.state()),
                "/api/audio": lambda: self.send(session.media("audio", self.window_arg()), "audio/wav"),
                "/api/spectrogram": lambda: self.send(session.media("spectrogram", self.window_arg()), "image/png"),
                "/api/export": lambda: self.send(session.export().encode(), "text/csv",
                                                 extra={"Content-Disposition": 'attachment; filename="labels.csv"'}),
            }
            self.dispatch(routes)

        def do_POST(self) -> None:  # noqa: N802
            def label() -> None:
                length = int(self.headers.get("Content-Length", 0))
                self.send_json(session.label(json.loads(self.rfile.read(length) or b"{}")))
            self.dispatch({"/api/label": label})

        def dispatch(self, routes: dict[str, Callable[[], None]]) -> None:
            route = routes.get(urlparse(self.path).path)
            if route is None:
                self.send_json({"error": f"no such page: {self.path}"}, HTTPStatus.NOT_FOUND)
                return
            try:
                route()
            except (KeyError, ValueError) as exc:
                self.send_json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
            except OSError as exc:
                self.send_json({"error": f"{type(exc).__name__}: {exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    return Handler


def serve(session: LabelSession, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """A started server (in a daemon thread) for ``session``; ``port = 0`` picks a free one
    (``server.server_address``). Stop it with ``server.shutdown()``."""
    server = ThreadingHTTPServer((host, port), make_handler(session))
    threading.Thread(target=server.serve_forever, daemon=True, name="label-page").start()
    return server


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True)
    p.add_argument("--queue", default=None, help="a table with a window_id column (hits.csv, queue.csv)")
    p.add_argument("--classes", nargs="*", default=[], help="classes to answer for (those labelled already join)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--annotator", default="page", help="stored as each label's provenance")
    args = p.parse_args(argv)
    session = LabelSession(args.db, args.queue, args.classes, args.annotator)
    server = serve(session, args.host, args.port)
    host, port = server.server_address[:2]
    print(json.dumps({"url": f"http://{host}:{port}/", "windows": len(session.queue), "classes": session.classes}),
          flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
