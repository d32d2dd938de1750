"""Kept-alive connections under the official SendGrid client, which opens a new one for every request.

python-http-client (under `sendgrid`) builds each request itself, then hands it to its
`_make_request`, a hook that it keeps apart for this purpose; here that hook sends the request
over a connection taken from a small pool instead of a new urllib opener. Everything else stays
the library's: the URL, the headers, the answer and its exceptions. With a proxy set in the
environment the library's own opener is used, as before.

The library also formats every request body into a debug string (`PAYLOAD: ...`) whether or not
anything logs it, and logs the headers, API key included: the body goes as `Body`, bytes whose
text is only their size (which also keeps every subscriber's address out of a debug log), and the
key as `Secret`, which prints masked.
"""

from __future__ import annotations

import http.client
import io
import select
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from python_http_client import Client
from python_http_client.exceptions import handle_error

IDLE_LIMIT = 4.0  # seconds a connection may rest before it is not reused: servers close idle ones


class Body(bytes):
    """A request body that prints as its size."""

    def __str__(self) -> str:
        return f"<{len(self):,} bytes>"

    __repr__ = __str__  # (formatting it with "{}", as the library does, comes to str)


class Text(str):
    """Already-JSON text that the library encodes as `Body`."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return Body(str.encode(self, encoding, errors))


class Secret(str):
    """A header value that prints masked: the library logs every request's headers at debug level."""

    def __repr__(self) -> str:
        return "'[hidden]'"

    __str__ = __repr__


class _Answer:
    """What python-http-client's Response reads from an answer: status, body, headers."""

    def __init__(self, status: int, body: bytes, headers: http.client.HTTPMessage) -> None:
        self._status, self._body, self._headers = status, body, headers

    def getcode(self) -> int:
        return self._status

    def read(self) -> bytes:
        return self._body

    def info(self) -> http.client.HTTPMessage:
        return self._headers


class Connections:
    """Idle connections to one host, each reused while the server keeps it open."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port
        self._idle: list[tuple[http.client.HTTPConnection, float]] = []
        self._lock = threading.Lock()
        proxy = urllib.request.getproxies().get(parts.scheme)
        self.proxied = bool(proxy) and not urllib.request.proxy_bypass(self.host)

    def _take(self, timeout: float) -> http.client.HTTPConnection:
        with self._lock:
            while self._idle:
                conn, since = self._idle.pop()
                if time.monotonic() - since < IDLE_LIMIT and not _dropped(conn):
                    if conn.sock is not None:
                        conn.sock.settimeout(timeout)
                    return conn
                conn.close()
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._idle.append((conn, time.monotonic()))

    def exchange(self, request: urllib.request.Request, timeout: float) -> _Answer:
        """One request and its whole answer; raises as urllib and python-http-client do (URLError when
        the request was not sent whole, the library's HTTPError for an error status)."""
        conn = self._take(timeout)
        try:
            conn.request(request.get_method(), request.selector, body=request.data,
                         headers=dict(request.header_items()))
        except OSError as exc:  # the connection or the writing failed: the request was not taken
            conn.close()
            raise urllib.error.URLError(exc) from None
        try:
            response = conn.getresponse()
            body = response.read()
        except BaseException:
            conn.close()
            raise
        if response.will_close:
            conn.close()
        else:
            self._give(conn)
        if response.status >= 400:
            raise handle_error(urllib.error.HTTPError(request.full_url, response.status, response.reason,
                                                      response.msg, io.BytesIO(body)))
        return _Answer(response.status, body, response.msg)

    def close(self) -> None:
        with self._lock:
            for conn, _since in self._idle:
                conn.close()
            self._idle.clear()


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection was closed by the server (readable with nothing asked: EOF)."""
    if conn.sock is None:
        return True
    try:
        readable, _, _ = select.select([conn.sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Endpoint(Client):  # type: ignore[misc]
    """The official client at one endpoint (mail send), its requests over `Connections`."""

    def __init__(self, chain: Client, connections: Connections) -> None:
        headers = {key: Secret(value) if key.lower() == "authorization" else value
                   for key, value in chain.request_headers.items()}
        super().__init__(host=chain.host, request_headers=headers, version=chain._version,
                         url_path=chain._url_path, append_slash=chain.append_slash, timeout=chain.timeout)
        self.connections = connections

    def _make_request(self, opener: Any, request: urllib.request.Request, timeout: float | None = None) -> Any:
        if self.connections.proxied:
            return super()._make_request(opener, request, timeout)
        return self.connections.exchange(request, timeout or self.timeout or 30.0)
