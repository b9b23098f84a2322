"""`spartan serve`: the ``reports/`` folder over HTTP on this machine only.

The dashboard opens from disk without it; a server is for those who prefer a URL. It is
Python's `http.server` (static files, GET and HEAD), bound to a loopback address, so
nothing is reachable from another machine. Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from research_lib.errors import ConfigError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000


class ReportsServer(ThreadingHTTPServer):
    """A threading HTTP server of one folder; ``url`` is where its ``index.html`` is."""

    daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


class _ReportsServer6(ReportsServer):
    address_family = socket.AF_INET6


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(reports_dir: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> ReportsServer:
    """A bound (not yet serving) server of ``reports_dir``; ``port`` 0 picks a free port.

    Raises `ConfigError` for a host that is not a loopback address, a folder without
    ``index.html``, or a port that cannot be bound.
    """
    folder = Path(reports_dir)
    if not _is_loopback(host):
        raise ConfigError(f"host {host!r} is not a loopback address; `spartan serve` serves this machine only "
                          f"(use {DEFAULT_HOST}, ::1 or localhost)")
    if not (folder / "index.html").is_file():
        raise ConfigError(f"{folder} has no index.html; build the dashboard first: spartan index")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder.resolve()))
    try:
        return (_ReportsServer6 if ":" in host else ReportsServer)((host, port), handler)
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another port, "
                          "e.g. --port 8001") from None


def serve(reports_dir: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, *,
          echo: Callable[[str], None] = print) -> str:
    """Serve ``reports_dir`` until Ctrl-C; return the URL it was served at (printed first)."""
    server = make_server(reports_dir, host, port)
    echo(f"Serving {Path(reports_dir).resolve()} at {server.url} (this machine only; Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    echo("Stopped.")
    return server.url
