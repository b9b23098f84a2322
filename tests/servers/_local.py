"""What every local test server shares: a threading HTTP server on 127.0.0.1 at a free port,
started and stopped with the test (a context manager)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalHTTPServer:
    """Subclasses build their request handler in ``start()`` and end it with `_serve`."""

    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def root_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self):  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _serve(self, handler: type[BaseHTTPRequestHandler], name: str,
               server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer):
        self._httpd = server_class(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name=name, daemon=True)
        self._thread.start()
        return self

    def _before_stop(self) -> None:
        """Release what a handler may be waiting on (a delayed answer), before the shutdown."""

    def stop(self) -> None:
        self._before_stop()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
