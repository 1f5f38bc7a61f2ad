"""Small HTTP servers on loopback that record what they are sent: a webhook sink (POST) and a
file server (GET). Real servers, so what talks to them goes through real sockets."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass  # the tests read what the servers record, not their access log


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up: fine
            super().handle_error(request, client_address)


class LoopbackServer:
    """A ThreadingHTTPServer on a free loopback port, served from a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._httpd = QuietServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class FileServer:
    """Serves `routes` (path -> (status, body, headers)) on loopback and counts every request.
    A path in `trickle` sends its body a byte at a time, that many seconds apart; `sent` counts
    the bytes of each trickled body sent so far."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes, dict[str, str]]] = {}
        self.trickle: dict[str, float] = {}
        self.hits: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        server = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                server.hits[self.path] += 1
                status, body, headers = server.routes.get(self.path, (404, b"", {}))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                pause = server.trickle.get(self.path)
                if pause is None:
                    self.wfile.write(body)
                    return
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    server.sent[self.path] += 1
                    time.sleep(pause)  # the slow server being simulated, not a wait

        self.server = LoopbackServer(Handler)
        self.origin = self.server.origin

    def close(self) -> None:
        self.server.close()


class WebhookSink:
    """A real HTTP server on loopback that records every POST: its JSON body, headers and time.

    `statuses` are answered in order, one per request, then 200."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests: list[tuple[float, dict[str, str], dict[str, Any]]] = []
        self.statuses: list[int] = []
        self._changed = threading.Condition()
        sink = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with sink._changed:
                    status = sink.statuses.pop(0) if sink.statuses else 200
                self.send_response(status)
                if status in (301, 302, 307, 308):
                    self.send_header("Location", sink.url + "/elsewhere")
                self.end_headers()
                # Recorded before the handler returns and closes the connection: a sender that
                # waits for the end of the answer sees its events recorded in order.
                with sink._changed:
                    sink.requests.append((time.monotonic(), dict(self.headers), body))
                    if status == 200:
                        sink.events.append(body)
                    sink._changed.notify_all()

        self._server = LoopbackServer(Handler)
        self.url = f"{self._server.origin}/webhook"

    def wait_requests(self, count: int, timeout: float = 30) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise AssertionError(f"{len(self.requests)} requests in {timeout} s, not {count}")

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 120
    ) -> dict[str, Any]:
        """Block until an event matching `predicate` has arrived; return it."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((e for e in self.events if predicate(e)), None), timeout
            )
        if not found:
            raise AssertionError(f"no matching webhook in {timeout} s; got {self.events}")
        return found

    def close(self) -> None:
        self._server.close()
