"""What the fake provider APIs share: a threaded HTTP server on 127.0.0.1 answering JSON, a script of
answers to give next (a status, a delay), answers to drop after reading the request, a latency for
every answer, and `GET /_stats` for the benchmarks."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeService:
    def __init__(self, *, latency: float = 0.0, record_bodies: bool = True) -> None:
        self.latency, self.record_bodies = latency, record_bodies
        self.lock = threading.Lock()
        self.received: list[str] = []  # every accepted recipient address, in order
        self.requests = 0
        self.script: deque[tuple[int, float, Any]] = deque()  # (status, delay, body) for the next requests
        self.drop: deque[bool] = deque()  # read the next request, then hang up without answering
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                answer = server.answer_get(self.path, self.headers)
                if answer is not None:
                    self.reply(*answer)
                    return
                with server.lock:
                    self.reply(200, {"received": len(server.received), "unique": len(set(server.received)),
                                     "requests": server.requests})

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if server.latency:
                    time.sleep(server.latency)
                answer = server.answer(self.path, self.headers, raw)
                if answer is None:  # dropped after reading: the client cannot know what happened
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.reply(*answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def answer(self, path: str, headers: Any, raw: bytes) -> tuple[Any, ...] | None:
        """The status, JSON body (and headers) for one request; None to hang up without answering."""
        raise NotImplementedError

    def answer_get(self, path: str, headers: Any) -> tuple[Any, ...] | None:
        """The answer to a GET of the service's own; None for `/_stats`."""
        return None

    def take(self) -> tuple[tuple[int, float, Any] | None, bool]:
        """Count a request; the scripted answer for it, if any, and whether to drop it."""
        with self.lock:
            self.requests += 1
            return (self.script.popleft() if self.script else None), (self.drop.popleft() if self.drop else False)

    def scripted(self, answer: tuple[int, float, Any] | None) -> tuple[int, Any] | None:
        """A scripted refusal to give now (after its delay), or None to answer as the service would."""
        if answer is None:
            return None
        status, delay, body = answer
        time.sleep(delay)
        return None if status == 200 else (status, body or {"message": f"scripted {status}"})

    def answer_next(self, status: int, *, times: int = 1, delay: float = 0.0, body: Any = None) -> None:
        with self.lock:
            self.script.extend([(status, delay, body)] * times)

    def drop_next(self) -> None:
        with self.lock:
            self.drop.append(True)

    def start(self) -> FakeService:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def serve(self) -> None:
        """For a benchmark: print the port, then serve until killed."""
        print(self.port, flush=True)
        self.httpd.serve_forever()
