#!/usr/bin/env python
"""Preference labels from a person: two clips side by side in the browser, left / right / equal / skip.

    python experiments/label.py dataset=<id collected with frames=true> pairs=50 segment=25 name=<name> [port=8765]

then open the printed address. Segment pairs are cut from the dataset (the same ``seed`` gives the
same pairs) and shown as looping clips; frames after an episode's end are darkened. Every answer
is appended to ``<dataset>/preferences/<name>.jsonl`` (flushed and synced before the page moves on)
and the answered pairs are rewritten to ``<name>.npz``, the file that ``agent=cpl
agent.preferences=<name>`` and ``reward=preference reward.pairs=<file>`` read, so nothing is lost
when the page or the server is closed: running the same command again continues where it stopped.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import numpy as np

from envs.errors import ConfigError
from experiments.cli import check_int, compose_script, dataset_source, user_errors

PAGE = Path(__file__).resolve().parent / "label_page" / "index.html"
NAMES = ("left", "right", "equal", "skip")  # = LEFT, RIGHT, EQUAL, SKIP


class LabelSession:
    """The pairs to label and the answers so far (the server's state; usable without a server).

    Args:
        dataset: Dataset id (it must have frames).
        name: Preference file name.
        pairs: Number of pairs. segment: Steps per clip. seed: Which segments.
        root: Dataset root. task: Instruction shown on the page. fps: Clip frame rate.
    """

    def __init__(
        self,
        dataset: str,
        name: str,
        pairs: int,
        segment: int,
        seed: int = 0,
        root: str | None = None,
        task: str | None = None,
        fps: float = 15,
    ) -> None:
        from envs import data as ds
        from rewards.preference.segments import cut_segments

        self.dataset, self.name, self.fps = dataset, name, float(fps)
        self.task = task or "Which clip does the task better?"
        folder = ds.preferences_dir(dataset, root)
        self.answers_path = folder / f"{name}.jsonl"
        self.pairs_path = folder / f"{name}.npz"
        self.video_dir = folder / f".{name}_clips"
        data = ds.load(dataset, root, extras={"frame"})  # refused with a pointer to frames=true if it has none
        rng = np.random.default_rng(int(seed))
        self.left = cut_segments(data, int(segment), int(pairs), rng)
        self.right = cut_segments(data, int(segment), int(pairs), rng)
        self.total = int(pairs)
        self.labels = np.full(self.total, -1, dtype=np.int8)  # -1: not asked yet
        self._lock = threading.Lock()
        self._replay()

    def _replay(self) -> None:
        """Answers already given (a restart continues); the last answer to a pair counts."""
        if not self.answers_path.exists():
            return
        with self.answers_path.open() as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash: everything before it stands
                    continue
                if 0 <= int(rec["pair"]) < self.total and rec["label"] in NAMES:
                    self.labels[int(rec["pair"])] = NAMES.index(rec["label"])

    @property
    def answered(self) -> int:
        """How many pairs have an answer."""
        return int(np.sum(self.labels >= 0))

    def next_pair(self) -> int | None:
        """The first pair without an answer, or ``None`` when every pair is answered."""
        todo = np.flatnonzero(self.labels < 0)
        return int(todo[0]) if len(todo) else None

    def answer(self, pair: int, label: str) -> None:
        """Record one answer: append it to the log (synced to disk), then rewrite the answered pairs' file."""
        from rewards.preference.segments import PreferencePairs

        if label not in NAMES:
            raise ConfigError(f"label {label!r} must be one of {', '.join(NAMES)}")
        if not 0 <= int(pair) < self.total:
            raise ConfigError(f"pair {pair} is not in 0..{self.total - 1}")
        with self._lock:
            self.answers_path.parent.mkdir(parents=True, exist_ok=True)
            with self.answers_path.open("a") as f:
                f.write(json.dumps({"pair": int(pair), "label": label, "time": time.time()}) + "\n")
                f.flush()
                os.fsync(f.fileno())
            self.labels[int(pair)] = NAMES.index(label)
            done = np.flatnonzero(self.labels >= 0)
            PreferencePairs(
                self.left.take(done),
                self.right.take(done),
                self.labels[done],
                "human (experiments/label.py)",
                self.dataset,
            ).save(self.pairs_path)

    def clip(self, pair: int, side: str) -> Path:
        """The mp4 of one side of a pair (written on first request)."""
        import imageio.v2 as imageio

        seg = self.left if side == "left" else self.right
        path = self.video_dir / f"{pair}_{side}.mp4"
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        if seg.frames is None:  # not reached: loading with extras={"frame"} refuses a dataset without frames
            raise ConfigError(f"dataset {self.dataset} has no frames; collect it with frames=true")
        frames = seg.frames[pair].copy()
        frames[~seg.valid()[pair]] //= 3  # after the episode's end: darkened
        tmp = path.with_name(f".tmp_{path.name}")
        writer = imageio.get_writer(
            str(tmp),
            format="FFMPEG",
            fps=self.fps,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=16,
            ffmpeg_log_level="error",
        )
        with writer:  # not `as writer`: imageio's stubs say __enter__ returns the base class, which lacks append_data
            for frame in frames:
                writer.append_data(frame)
        tmp.replace(path)
        return path

    def state(self) -> dict[str, Any]:
        """What the page shows next (the body of ``GET /api/next``).

        Returns:
            ``{"answered", "total", "task", "file", "done"}``, plus ``"pair"`` and the ``"left"`` and
            ``"right"`` clip addresses while a pair is left to answer.
        """
        pair = self.next_pair()
        out: dict[str, Any] = {
            "answered": self.answered,
            "total": self.total,
            "task": self.task,
            "file": str(self.pairs_path),
        }
        if pair is None:
            return {**out, "done": True}
        return {
            **out,
            "done": False,
            "pair": pair,
            "left": f"clips/{pair}_left.mp4",
            "right": f"clips/{pair}_right.mp4",
        }


def make_server(session: LabelSession, host: str = "127.0.0.1", port: int = 8765) -> ThreadingHTTPServer:
    """An HTTP server for the page (``server.serve_forever()``; ``port=0``: any free port)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: answers are logged below
            pass

        def _send(self, body: bytes, ctype: str, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path in ("/", "/index.html"):
                self._send(PAGE.read_bytes(), "text/html; charset=utf-8")
            elif self.path == "/api/next":
                self._send(json.dumps(session.state()).encode(), "application/json")
            elif self.path.startswith("/clips/"):
                stem = self.path[len("/clips/") :].removesuffix(".mp4")
                try:
                    pair_s, side = stem.split("_")
                    pair = int(pair_s)
                    if side not in ("left", "right") or not 0 <= pair < session.total:
                        raise ValueError
                except ValueError:
                    self._send(b"no such clip", "text/plain", HTTPStatus.NOT_FOUND)
                    return
                self._send(session.clip(pair, side).read_bytes(), "video/mp4")
            else:
                self._send(b"not found", "text/plain", HTTPStatus.NOT_FOUND)

        def do_POST(self) -> None:
            if self.path != "/api/answer":
                self._send(b"not found", "text/plain", HTTPStatus.NOT_FOUND)
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                session.answer(int(body["pair"]), str(body["label"]))
            except (ConfigError, ValueError, KeyError, TypeError) as exc:
                self._send(f"bad answer: {exc}".encode(), "text/plain", HTTPStatus.BAD_REQUEST)
                return
            print(
                f"pair {body['pair']}: {body['label']} ({session.answered}/{session.total})",
                file=sys.stderr,
                flush=True,
            )
            self._send(json.dumps(session.state()).encode(), "application/json")

    return ThreadingHTTPServer((host, int(port)), Handler)


def main(argv: list[str]) -> None:
    """Serve the labelling page for a dataset until interrupted (module docstring).

    Args:
        argv: ``key=value`` overrides of ``experiments/conf/label.yaml`` (``dataset=``, ``pairs=``, ...).

    Raises:
        ConfigError: A bad setting, a dataset without frames, or a port that cannot be served on.
    """
    cfg = compose_script(list(argv), "label", "label.py")
    dataset, root = dataset_source(cfg, "label.py (a dataset collected with frames=true)")
    check_int(cfg, "pairs", 1)
    check_int(cfg, "segment", 1)
    check_int(cfg, "port", 0)
    session = LabelSession(
        dataset,
        str(cfg.name),
        int(cfg.pairs),
        int(cfg.segment),
        int(cfg.seed),
        root,
        cfg.task,
        cfg.fps,
    )
    try:
        server = make_server(session, str(cfg.host), int(cfg.port))
    except OSError as exc:
        raise ConfigError(f"cannot serve on {cfg.host}:{cfg.port} ({exc.strerror}); give another port=") from exc
    host, port = server.server_address[:2]
    if isinstance(host, (bytes, bytearray)):  # typeshed allows bytes; an AF_INET server reports str
        host = host.decode()
    print(
        f"labelling {session.total} pairs of {dataset} ({session.answered} answered so far): open http://{host}:{port}/ "
        f"- answers go to {session.answers_path} and {session.pairs_path}; Ctrl-C stops (nothing is lost)",
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(f"stopped with {session.answered}/{session.total} answered", file=sys.stderr)
    finally:
        server.server_close()


if __name__ == "__main__":
    with user_errors():
        main(sys.argv[1:])
