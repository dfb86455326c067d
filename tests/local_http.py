"""A local HTTP server for download tests: static files with Range support, and ``?cut=N``
to drop the connection after N bytes (a truncated transfer). Tests never reach the network."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with Range support; ``?cut=N`` drops the connection after N bytes."""

    ranges: list = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        path, _, query = self.path.partition("?")
        file = os.path.join(self.directory, path.lstrip("/"))
        if not os.path.isfile(file):
            self.send_error(404)
            return
        data = open(file, "rb").read()
        start = 0
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if query.startswith("cut="):
            self.wfile.write(body[: int(query[4:])])
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(body)


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 (a free port) while the block runs; yields the base URL."""
    RangeHandler.ranges = []
    handler = functools.partial(RangeHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
