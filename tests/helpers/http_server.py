"""A local HTTP server (stdlib ``http.server`` in a thread) with the behaviours downloads meet.

Paths (``NAME`` is any file name; the payload is the same for all):

* ``/range/NAME``: honours ``Range`` (``206`` + ``Content-Range``);
* ``/norange/NAME``: ignores ``Range`` and always sends the whole file with ``200``;
* ``/drop/NAME``: announces the full length, sends half, then closes the connection;
* ``/badrange/NAME``: answers ``Range`` with ``206`` but sends the file from byte 0
  (``Content-Range: bytes 0-...``), as some misconfigured servers do;
* ``/trickle/NAME``: announces the full length, then sends one byte every 50 ms;
* ``/endless/NAME``: no length, zeros forever;
* ``/slow/NAME``: the file in 8 pieces, 0.25 s apart (for concurrent downloads);
* ``/half206/NAME``: answers every request, ``Range`` or not, with ``206`` and the first half
  (``Content-Range: bytes 0-(n/2-1)/n``);
* ``/whole206/NAME``: answers every request with ``206`` and the whole file
  (``Content-Range: bytes 0-(n-1)/n``);
* ``/shortlength/NAME``: announces half the length (``Content-Length``), then sends the whole
  file and closes;
* anything else: ``404``.
"""
from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator, List, Optional


class _Handler(BaseHTTPRequestHandler):
    payload: bytes = b""
    requests: List[dict] = []

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self.requests.append({"path": self.path, "range": self.headers.get("Range")})
        kind = self.path.strip("/").split("/", 1)[0]
        data = self.payload
        if kind == "range" and self.headers.get("Range", "").startswith("bytes="):
            start = int(self.headers["Range"][len("bytes="):].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:])
        elif kind in ("range", "norange"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif kind == "badrange":
            if self.headers.get("Range"):
                self.send_response(206)
                self.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif kind == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for i in range(len(data)):
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:  # the client gave up
                return
        elif kind == "endless":
            self.send_response(200)
            self.end_headers()
            block = bytes(1 << 16)
            try:
                while True:
                    self.wfile.write(block)
            except OSError:  # the client hung up
                return
        elif kind == "slow":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            step = max(1, len(data) // 8)
            try:
                for i in range(0, len(data), step):
                    self.wfile.write(data[i:i + step])
                    self.wfile.flush()
                    time.sleep(0.25)
            except OSError:  # the client gave up
                return
        elif kind in ("half206", "whole206"):
            end = len(data) // 2 if kind == "half206" else len(data)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{end - 1}/{len(data)}")
            self.send_header("Content-Length", str(end))
            self.end_headers()
            self.wfile.write(data[:end])
        elif kind == "shortlength":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data) // 2))
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
        elif kind == "drop":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
        else:
            self.send_error(404, "Not Found")


@contextlib.contextmanager
def serve(payload: bytes) -> Iterator["Server"]:
    """Run the server on ``127.0.0.1`` (a free port) for the duration of the block."""
    handler = type("Handler", (_Handler,), {"payload": payload, "requests": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", handler)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


class Server:
    def __init__(self, base: str, handler: type):
        self.base = base
        self._handler = handler

    def url(self, kind: str, name: str = "model.pth") -> str:
        return f"{self.base}/{kind}/{name}"

    @property
    def requests(self) -> List[dict]:
        return self._handler.requests

    def last_range(self) -> Optional[str]:
        return self.requests[-1]["range"] if self.requests else None
