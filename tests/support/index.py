"""A package index on 127.0.0.1 for uv builds that must be stuck for a while (tests of
stopping builds, of uv's cache lock)."""

from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path


class HeldIndex:
    """A PEP 503 index on 127.0.0.1 that holds every request until released: a uv build
    that asks it is stuck in a real network read (holding uv's cache lock) for as long as
    the test wants. Then it serves ``wheels`` (the build finishes normally), or answers 404
    to everything when there are none (the build fails)."""

    def __init__(self, wheels: Path | None = None) -> None:
        self.release = threading.Event()
        self.paths: list[str] = []
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.paths.append(self.path)
                index.release.wait(600)
                try:
                    self._answer()
                except OSError:  # uv was killed meanwhile
                    pass

            def do_HEAD(self) -> None:  # uv asks before a download; no ranges are offered
                self._answer(head=True)

            def _answer(self, head: bool = False) -> None:
                parts = [p for p in self.path.split("/") if p]
                if wheels is None:
                    self.send_error(404)
                    return
                if len(parts) == 2 and parts[0] == "simple":
                    name = re.sub(r"[-_.]+", "_", parts[1]).lower()
                    links = "".join(f'<a href="/files/{w.name}">{w.name}</a>\n'
                                    for w in sorted(wheels.glob(f"{name}-*.whl")))
                    body, kind = f"<html><body>\n{links}</body></html>\n".encode(), "text/html"
                elif len(parts) == 2 and parts[0] == "files" and (wheels / parts[1]).is_file():
                    body, kind = (wheels / parts[1]).read_bytes(), "application/octet-stream"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(30)
