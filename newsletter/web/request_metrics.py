"""ASGI middleware: each request to the web app counted by its route's pattern, method and status, and timed.

Labels stay bounded whatever clients send: a path that matches no route is `other`, and so is a
method that is not HTTP's usual set. A token in a path never becomes a label.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.routing import Route

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    def __init__(self, app: Any, answered: Callable[[str, str, int, float], None]) -> None:
        self.app, self.answered = app, answered

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500  # an exception that escapes is answered with a 500

        async def noted(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            # The route the router picked (a full match, else one whose method did not match: a 405).
            route = scope.get("route")
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.answered(route.path if isinstance(route, Route) else "other", method, status,
                          time.perf_counter() - started)
