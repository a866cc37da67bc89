"""Serves the built console (``console/dist``) to Envoy, which routes ``/``
of the edge port here and ``/v1/…`` to the services. Static files only: the
console reads and changes the mesh through the public API, like any client.

``GET /healthz`` answers 200 once the assets are there, for ``gridmesh up``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from gridmesh.common.errors import ConfigError
from gridmesh.config import MeshConfig, load_config
from gridmesh.observability.logs import configure_logging

log = logging.getLogger(__name__)

CHECKOUT_ASSETS = Path(__file__).resolve().parents[3] / "console" / "dist"
"""Where ``./dev`` builds the console in a checkout (``npm ci && npm run build``)."""


def assets_path(config: MeshConfig) -> Path:
    return Path(config.console.assets_dir).expanduser() if config.console.assets_dir else CHECKOUT_ASSETS


def check_assets(path: Path) -> None:
    if not (path / "index.html").is_file():
        raise ConfigError(
            f"the console is not built: {path / 'index.html'} is missing; run ./dev up "
            f"(or npm ci && npm run build in console/), or run without it: GRIDMESH_CONSOLE_ENABLED=false"
        )


class ConsoleHandler(SimpleHTTPRequestHandler):
    """The built files, never cached stale, never a directory listing."""

    server_version = "gridmesh-console"

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._plain(200, b"ok\n")
            return
        super().do_GET()

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(404, "not found")
        return None

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def _plain(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def build_server(config: MeshConfig) -> ThreadingHTTPServer:
    assets = assets_path(config)
    check_assets(assets)
    handler = partial(ConsoleHandler, directory=str(assets))
    server = ThreadingHTTPServer((config.console.host, config.console.port), handler)
    server.daemon_threads = True
    return server


def main() -> None:
    config = load_config(os.environ)
    configure_logging(config.log_level, config.log_format, "console")
    try:
        server = build_server(config)
    except ConfigError as e:
        log.error("%s", e.message)
        sys.exit(2)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    log.info("console on http://%s:%s/ serving %s", host, port, assets_path(config))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        log.info("console stopped")
