"""The subscriber-facing web app: double opt-in, one-click unsubscribe, provider webhooks, archive.

Starlette, served by uvicorn (`newsletter serve`, or any ASGI server: `uvicorn --factory
newsletter.web:app`). Every route calls the front door (`Newsletter`); database work runs in the
thread pool. Unsubscribe and confirmation links carry signed tokens; forms carry a double-submit
CSRF token; a webhook's signature is checked before its body is read as events.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..app import Newsletter
from . import challenge
from .archive import Archive
from .background import Welcomer
from .pages import Pages
from .request_metrics import RequestMetrics
from .security import BodyLimit, SecurityHeaders
from .subscriptions import Subscriptions
from .webhooks import Webhooks

__all__ = ["app", "create_app"]


def create_app(nl: Newsletter, *, clock: Callable[[], float] = time.time) -> Starlette:
    """The ASGI app for one newsletter; `clock` (seconds since the epoch) is for tests."""
    nl.config.secret()  # links cannot be checked without it: fail at start-up, not at the first click
    nl.issues.check_templates()  # a broken template: one line now, not a 500 at the first request
    nl.welcome.check()  # and so for a broken welcome mail
    web = nl.config.web
    pages, welcomer = Pages(nl), Welcomer(nl)
    proof = (challenge.ProofOfWork(nl.config.secret(), web.proof_of_work_difficulty, web.allowed_origins, clock)
             if web.proof_of_work else None)
    subscriptions = Subscriptions(nl, pages, clock, welcomer, proof)
    webhooks, archive = Webhooks(nl, clock), Archive(nl, pages)

    def limits(path: str) -> int:
        return web.max_webhook_bytes if path.startswith("/webhooks/") else web.max_form_bytes

    async def healthz(_request: Request) -> Response:
        healthy = await run_in_threadpool(nl.healthy)
        return PlainTextResponse("ok\n" if healthy else "the store does not answer\n", 200 if healthy else 503)

    async def metrics(request: Request) -> Response:
        shown = await run_in_threadpool(nl.monitoring.scrape, request.headers.get("authorization", ""))
        if shown is None:
            return PlainTextResponse("a bearer token is needed\n", 401, headers={"WWW-Authenticate": "Bearer"})
        return Response(shown[0], media_type=shown[1])

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        welcomer.wake()  # whatever an earlier process left
        yield
        welcomer.stop()
        nl.close()

    optional = [] if proof is None else [Route("/challenge", proof.serve_challenge),
                                       Route("/static/{name}", challenge.static)]
    if nl.config.metrics.enabled:
        nl.monitoring.allowed("")  # its token's variable unset: one line now, not a 500 at the first scrape
        optional.append(Route("/metrics", metrics))
    app = Starlette(
        routes=[
            *optional,
            Route("/subscribe/{list}", subscriptions.subscribe, methods=["GET", "POST"]),
            Route("/confirm/{token}", subscriptions.confirm, methods=["GET", "POST"]),
            Route("/unsubscribe/{token}", subscriptions.unsubscribe, methods=["GET", "POST"]),
            Route("/preferences/{token}", subscriptions.preferences, methods=["GET", "POST"]),
            Route("/webhooks/{provider}", webhooks.receive, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/archive", archive.index),
            Route("/archive/feed.xml", archive.feed),
            Route("/archive/{list}", archive.index),  # a list's archive, or (for links in sent mail) an issue
            Route("/archive/{list}/feed.xml", archive.feed),
            Route("/archive/{list}/{slug}", archive.issue),
        ],
        middleware=[Middleware(RequestMetrics, answered=nl.monitoring.metrics.answered),
                    Middleware(SecurityHeaders, scripts=web.proof_of_work), Middleware(BodyLimit, limit_for=limits)],
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # a redirect built from the Host header could point anywhere
    app.state.newsletter = nl
    return app


def app() -> Starlette:
    """The app for the config at $NEWSLETTER_CONFIG (else ./config.toml): the factory ASGI servers load."""
    return create_app(Newsletter.from_config())
