"""What every route shares for safety: CSRF tokens, rate limits, and security headers on every response."""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

CSRF_COOKIE = "newsletter_csrf"
SECURITY_HEADERS = MappingProxyType({
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # tokens are in our URLs: never pass them on
    "Content-Security-Policy": "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src https: data:; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
})


_TOKEN_PATH = re.compile(r"/(confirm|unsubscribe|preferences)/[^/?#\s\"]+")


class RedactTokens(logging.Filter):
    """Hide the signed tokens in access-log lines: a log reader could otherwise unsubscribe anyone."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_TOKEN_PATH.sub(r"/\1/[token]", a) if isinstance(a, str) else a for a in record.args)
        record.msg = _TOKEN_PATH.sub(r"/\1/[token]", str(record.msg))
        return True


HONEYPOT = "website"  # a form field hidden from people: anything in it marks a robot


class RateLimiter:
    """At most `limit` hits per key in a sliding `window` of seconds (kept in memory, per app)."""

    def __init__(self, limit: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self.clock()
        with self._lock:
            if len(self._hits) > 50_000:  # forget keys that went quiet, so memory stays bounded
                for stale in [k for k, q in self._hits.items() if not q or q[-1] < now - self.window]:
                    del self._hits[stale]
            hits = self._hits[key]
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True


BAD_FORM = "The form could not be read. Please send it again from the page."


async def read_form(request: Request) -> FormData | None:
    """The request's form, or None when its body is not a form that parses.

    Newer Starlette answers a broken multipart body with 400 by itself; older releases let the
    parser's error through as a 500, so it is caught here too.
    """
    try:
        return await request.form()
    except (MultiPartException, ValueError):  # python-multipart's parse errors are ValueErrors
        return None


def csrf_for(request: Request) -> str:
    """The CSRF token of this browser (from its cookie), or a new one."""
    return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)


def csrf_ok(request: Request, form: Any) -> bool:
    """Double-submit check: the form's hidden field matches the SameSite=Strict cookie."""
    cookie, field = request.cookies.get(CSRF_COOKIE, ""), str(form.get("csrf", ""))
    # As bytes: compare_digest refuses str with characters outside ASCII, which anyone can send.
    return bool(cookie) and hmac.compare_digest(cookie.encode("utf-8", "replace"), field.encode("utf-8", "replace"))


def mask(email: str) -> str:
    """a***e@example.com: enough for the owner to recognise, little for anyone else."""
    local, _, domain = email.partition("@")
    shown = local[0] + "***" + (local[-1] if len(local) > 2 else "") if local else "***"
    return f"{shown}@{domain}"


class BodyLimit:
    """ASGI middleware: a request body may not exceed its route's limit, counted as bytes arrive.

    A declared Content-Length over the limit is refused at once; a chunked body is counted
    chunk by chunk and refused (413) the moment it passes the limit. So nothing reads, parses,
    checks a CSRF token or a signature on more than the limit, and memory stays flat.
    """

    def __init__(self, app: Any, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413, f"the request body is over {limit:,} bytes")
            return message

        await self.app(scope, counted, send)


async def _too_large(send: Any) -> None:
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": b"Request body too large"})


# What the proof-of-work widget needs besides ([web] proof_of_work): its script, worker and styles, and
# its fetch of the challenge, all from this server.
_SCRIPTS = "; script-src 'self'; worker-src 'self'; connect-src 'self'"


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every HTTP response (with `scripts`, the CSP lets this
    server's own scripts run: the proof-of-work widget's)."""

    def __init__(self, app: Any, scripts: bool = False) -> None:
        self.app = app
        policy = SECURITY_HEADERS["Content-Security-Policy"] + (_SCRIPTS if scripts else "")
        self.headers = [(k.lower().encode(), v.encode()) for k, v in
                        {**SECURITY_HEADERS, "Content-Security-Policy": policy}.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)
