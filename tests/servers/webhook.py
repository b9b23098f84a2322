"""A local webhook receiver on 127.0.0.1 for the alert tests: it records every request and
answers 200 ``{"ok": true}``, or what the test scripts.

Test hooks (thread-safe): ``fail_next(status, times=1)`` answers the next request(s) with
``status``; ``delay_next(seconds, times=1)`` answers them late (a client with a shorter timeout
gives up). ``requests`` holds ``RecordedRequest(method, path, headers, body)`` with the body
parsed as JSON when it is JSON.
"""

from __future__ import annotations

import collections
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from tests.servers._local import LocalHTTPServer


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class WebhookServer(LocalHTTPServer):
    """Use as a context manager; ``url`` is the endpoint to configure."""

    def __init__(self, path: str = "/hook") -> None:
        self.path = path
        self.requests: list[RecordedRequest] = []
        self._script: collections.deque[tuple[int, float]] = collections.deque()  # (status, delay)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return self.root_url + self.path

    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._script.extend([(status, 0.0)] * times)

    def delay_next(self, seconds: float, times: int = 1) -> None:
        with self._lock:
            self._script.extend([(200, seconds)] * times)

    @property
    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.body for r in self.requests]

    def start(self) -> WebhookServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                headers = {k.lower(): v for k, v in self.headers.items()}
                with owner._lock:
                    owner.requests.append(RecordedRequest("POST", self.path, headers, body))
                    status, delay = owner._script.popleft() if owner._script else (200, 0.0)
                if delay and owner._stopping.wait(delay):
                    return
                if urlsplit(self.path).path != owner.path:
                    status = 404
                payload = json.dumps({"ok": status < 400}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the client gave up (timed out) before the answer
                    pass

            def log_message(self, format, *args) -> None:  # keep pytest output clean
                pass

        self._stopping.clear()
        return self._serve(Handler, "webhook-server")

    def _before_stop(self) -> None:
        self._stopping.set()
