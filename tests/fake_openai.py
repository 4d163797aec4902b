"""A tiny OpenAI-compatible chat-completions server for tests (importable as ``tests.fake_openai``).

It answers ``POST .../chat/completions`` from a queue of canned replies, one per request, and
``GET .../models`` with its model list; every request is recorded. When the queue is empty it
answers 500 (and says so), so an unexpected extra call shows up in the test. Usage::

    replies = [status_reply(429, headers={"retry-after-ms": "1"}), chat_reply("hi")]
    base_url, state, shutdown = start_fake_openai(replies)
    try:
        ...  # OpenAIBackend(model="fake-model", base_url=base_url, ...)
        assert len(state.chat_requests()) == 2
    finally:
        shutdown()

or ``with fake_openai([...]) as (base_url, state): ...``.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One canned HTTP answer.

    Attributes:
        status: The HTTP status.
        body: A dict (sent as JSON) or a str (sent as is, for malformed bodies).
        headers: Extra response headers (``retry-after-ms``, ...).
        delay_s: Seconds to wait before answering (to trip the client's timeout).
    """

    status: int = 200
    body: dict[str, Any] | str = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


def chat_reply(text: str | None, model: str = "fake-model", finish_reason: str = "stop") -> Reply:
    """A well-formed chat completion whose message content is ``text`` (None for a null content)."""
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    return Reply(body=body)


def status_reply(status: int, message: str = "fake error", headers: dict[str, str] | None = None) -> Reply:
    """An OpenAI-style error body with HTTP ``status``."""
    return Reply(
        status=status, body={"error": {"message": message, "type": "fake", "code": status}}, headers=headers or {}
    )


@dataclass
class FakeState:
    """What the server will answer and what it was asked.

    Attributes:
        replies: The queue of canned chat replies, consumed one per chat request.
        models: Served model ids (``GET /models``).
        requests: Every request: ``{"method", "path", "headers" (lower-case names), "json"}``.
    """

    replies: deque[Reply]
    models: list[str]
    requests: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def chat_requests(self) -> list[dict[str, Any]]:
        """The chat-completions requests received so far."""
        with self.lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]


def _handler(state: FakeState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _record(self, payload: Any) -> None:
            with state.lock:
                state.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "json": payload,
                    }
                )

        def _send(self, reply: Reply) -> None:
            if reply.delay_s and state.stop.wait(reply.delay_s):
                return
            data = reply.body if isinstance(reply.body, str) else json.dumps(reply.body)
            raw = data.encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                pass

        def do_GET(self) -> None:
            self._record(None)
            if self.path.rstrip("/").endswith("/models"):
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in state.models]
                self._send(Reply(body={"object": "list", "data": data}))
            else:
                self._send(status_reply(404, f"no route {self.path}"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            raw = self.rfile.read(length)
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = raw.decode(errors="replace")
            self._record(payload)
            if not self.path.endswith("/chat/completions"):
                self._send(status_reply(404, f"no route {self.path}"))
                return
            with state.lock:
                reply = state.replies.popleft() if state.replies else None
            self._send(reply or status_reply(500, "fake server: no canned reply left"))

    return Handler


def start_fake_openai(replies: Iterable[Reply], models: Iterable[str] = ("fake-model",)) -> tuple[str, FakeState, Any]:
    """Serve ``replies`` on 127.0.0.1 at a free port, in a daemon thread.

    Args:
        replies: Canned answers to the chat requests, in order.
        models: Model ids listed by ``GET /v1/models``.

    Returns:
        ``(base_url, state, shutdown)``: the ``http://127.0.0.1:PORT/v1`` root, the shared
        :class:`FakeState`, and a no-argument function that stops the server.
    """
    state = FakeState(replies=deque(replies), models=list(models))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    def shutdown() -> None:
        state.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    host, port = server.server_address[:2]
    return f"http://{host}:{port}/v1", state, shutdown


@contextmanager
def fake_openai(replies: Iterable[Reply], models: Iterable[str] = ("fake-model",)) -> Iterator[tuple[str, FakeState]]:
    """:func:`start_fake_openai` as a context manager yielding ``(base_url, state)``."""
    base_url, state, shutdown = start_fake_openai(replies, models)
    try:
        yield base_url, state
    finally:
        shutdown()
