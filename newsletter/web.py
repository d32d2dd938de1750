"""The subscriber-facing web app: double opt-in, one-click unsubscribe, provider webhook, archive.

Starlette, served by uvicorn (`newsletter serve`). Database work runs in the thread pool.
Unsubscribe and confirmation links carry signed tokens; forms carry a double-submit CSRF token;
the webhook's signature is checked before its body is read as events.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections import defaultdict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from . import addresses, events, placeholders, tokens
from .config import Config
from .content import Issue, parse
from .errors import ContentError, InputError, NewsletterError, TokenError, UnknownListError
from .ledger import sent_issues
from .providers import sendgrid as sendgrid_provider
from .providers.base import Provider
from .render import Rendered, render
from .store import ACTIVE, UNSUBSCRIBED, Store, clean_text

log = logging.getLogger("newsletter.web")
CSRF_COOKIE = "newsletter_csrf"
MAX_WEBHOOK_BYTES = 5 * 1024 * 1024  # SendGrid posts batches far smaller than this
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",  # tokens are in our URLs: never pass them on
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
                               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
}


class RateLimiter:
    """At most `limit` hits per key in a sliding `window` of seconds (kept in memory)."""

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


def mask(email: str) -> str:
    """a***e@example.com: enough for the owner to recognise, little for anyone else."""
    local, _, domain = email.partition("@")
    shown = local[0] + "***" + (local[-1] if len(local) > 2 else "") if local else "***"
    return f"{shown}@{domain}"


class WebApp:
    """The routes and what they share: config, store, templates, limiters, provider."""

    def __init__(self, config: Config, provider_factory: Callable[[], Provider] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        from .send import make_provider

        self.config = config
        self.store = Store(config)
        self.secret = config.secret()
        self.unsubscribe = tokens.unsubscribe_signer(self.secret)
        self.templates = Jinja2Templates(directory=str(config.templates_dir / "web"))
        self.provider_factory = provider_factory or (lambda: make_provider(config))
        self.clock = clock
        web = config.web
        self.per_ip = RateLimiter(web.rate_limit_per_ip, web.rate_limit_window)
        self.per_email = RateLimiter(web.rate_limit_per_email, web.rate_limit_window)
        self.base_url = config.require_base_url()
        self._rendered: dict[tuple[Path, float], tuple[Issue, Rendered]] = {}

    # -- helpers --------------------------------------------------------------------------------

    def page(self, request: Request, name: str, context: dict[str, Any], status: int = 200,
             csrf: str | None = None) -> Response:
        response = self.templates.TemplateResponse(
            request, name, {"newsletter": self.config.newsletter, "csrf": csrf or "", **context}, status_code=status)
        if csrf:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/",
                                secure=self.base_url.startswith("https://"))
        return response

    def error(self, request: Request, status: int, message: str) -> Response:
        return self.page(request, "message.html", {"title": "Something is wrong", "message": message}, status)

    @staticmethod
    def csrf_for(request: Request) -> str:
        return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)

    @staticmethod
    def csrf_ok(request: Request, form: Any) -> bool:
        cookie, field = request.cookies.get(CSRF_COOKIE, ""), str(form.get("csrf", ""))
        return bool(cookie) and hmac.compare_digest(cookie, field)

    def list_or_none(self, name: str) -> Any:
        try:
            return self.config.list(name)
        except UnknownListError:
            return None

    # -- subscribe ------------------------------------------------------------------------------

    async def subscribe(self, request: Request) -> Response:
        name = request.path_params["list"]
        declared = self.list_or_none(name)
        if declared is None:
            return self.error(request, 404, "There is no such list.")
        csrf = self.csrf_for(request)
        if request.method == "GET":
            return self.page(request, "subscribe.html", {"list": declared, "error": "", "email": "", "name": ""},
                             csrf=csrf)
        form = await request.form()
        if not self.csrf_ok(request, form):
            return self.page(request, "subscribe.html", {"list": declared, "email": "", "name": "",
                             "error": "The form expired. Please send it again."}, 403, csrf=csrf)
        client = request.client.host if request.client else "unknown"
        if not self.per_ip.allow(client):
            return self.error(request, 429, "Too many requests from your address. Please try again later.")
        email, person = str(form.get("email", "")).strip(), clean_text(str(form.get("name", "")))[:200]
        try:
            addresses.normalize(email)
        except InputError:
            return self.page(request, "subscribe.html", {"list": declared, "email": email, "name": person,
                             "error": "That does not look like an email address."}, 400, csrf=csrf)
        await run_in_threadpool(self._request_subscription, email, name, person)
        # The same answer whatever happened, so the form tells nobody who is subscribed.
        return self.page(request, "message.html", {
            "title": "Check your inbox",
            "message": f"If {email} can be subscribed to {declared.title}, a message with a confirmation "
                       f"link is on its way. The link works for {self.config.web.confirm_ttl // 3600} hours.",
        })

    def _request_subscription(self, email: str, list_name: str, person: str) -> None:
        subscriber_id, should_mail = self.store.request_subscription(email, list_name, person)
        address = addresses.normalize(email)
        if subscriber_id is None or not should_mail or not self.per_email.allow(address.key):
            return
        from .send import send_confirmation

        provider = self.provider_factory()
        try:
            result = send_confirmation(self.config, provider, subscriber_id=subscriber_id,
                                       email=address.email, name=person, list_name=list_name)
            if result.status != "sent":
                log.error("confirmation mail to subscriber %s: %s %s", subscriber_id, result.status, result.error)
        except NewsletterError as exc:
            log.error("confirmation mail to subscriber %s failed: %s", subscriber_id, exc)
        finally:
            provider.close()

    # -- confirm --------------------------------------------------------------------------------

    async def confirm(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            claims = tokens.check_confirm(self.secret, token, now=self.clock())
        except TokenError as exc:
            return self.error(request, 400, f"This confirmation link does not work: {exc}.")
        declared = self.list_or_none(claims.list_name)
        if declared is None:
            return self.error(request, 404, "There is no such list.")
        csrf = self.csrf_for(request)
        if request.method == "GET":
            return self.page(request, "confirm.html", {"list": declared, "token": token}, csrf=csrf)
        form = await request.form()
        if not self.csrf_ok(request, form):
            return self.page(request, "confirm.html", {"list": declared, "token": token,
                             "error": "The form expired. Please press the button again."}, 403, csrf=csrf)
        status = await run_in_threadpool(self.store.confirm, claims.subscriber_id, claims.list_name)
        if status is None:
            return self.error(request, 404, "This subscription no longer exists.")
        if status != ACTIVE:
            return self.page(request, "message.html", {
                "title": "Not confirmed", "message": f"This address cannot be subscribed to {declared.title}."})
        return self.page(request, "message.html", {
            "title": "You are subscribed", "message": f"Thank you: {declared.title} will reach you from the next issue."})

    # -- unsubscribe ----------------------------------------------------------------------------

    async def unsubscribe_route(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            claims = self.unsubscribe.check(token)
        except TokenError:
            return self.error(request, 400, "This unsubscribe link is not valid. Use the link from the newest email.")
        declared = self.list_or_none(claims.list_name)
        found = await run_in_threadpool(self.store.membership, claims.subscriber_id, claims.list_name) \
            if declared else None
        if declared is None or found is None:
            return self.error(request, 404, "This subscription does not exist (any more).")
        email, status = found
        if request.method == "GET":  # never unsubscribes: mail scanners fetch every link
            return self.page(request, "unsubscribe.html", {"list": declared, "email": mask(email), "token": token,
                                                            "done": status == UNSUBSCRIBED},
                             csrf=self.csrf_for(request))
        form = await request.form()
        one_click = form.get("List-Unsubscribe") == "One-Click"  # RFC 8058: sent without cookies
        if not one_click and not self.csrf_ok(request, form):
            return self.error(request, 403, "The form expired. Please open the unsubscribe link again.")
        await run_in_threadpool(self.store.set_status, claims.subscriber_id, claims.list_name, UNSUBSCRIBED,
                                "one-click" if one_click else "web")
        return self.page(request, "message.html", {
            "title": "You are unsubscribed",
            "message": f"{mask(email)} will get no more {declared.title}. It takes effect at once, "
                       f"including for an issue being sent right now."})

    # -- provider webhook -----------------------------------------------------------------------

    async def sendgrid_webhook(self, request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_WEBHOOK_BYTES:
            return JSONResponse({"error": "body too large"}, status_code=413)
        body = await request.body()
        if len(body) > MAX_WEBHOOK_BYTES:
            return JSONResponse({"error": "body too large"}, status_code=413)
        settings = self.config.sendgrid
        if not settings.webhook_public_key:
            log.error("SendGrid webhook called but [sendgrid] webhook_public_key is not set: refused")
        if not sendgrid_provider.verify_webhook(
            settings.webhook_public_key, body, request.headers.get(sendgrid_provider.SIGNATURE_HEADER, ""),
            request.headers.get(sendgrid_provider.TIMESTAMP_HEADER, ""), settings.webhook_tolerance, now=self.clock(),
        ):
            return JSONResponse({"error": "bad or missing signature"}, status_code=403)
        try:
            parsed = sendgrid_provider.parse_events(body)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        counts = await run_in_threadpool(events.apply, self.store, parsed, "sendgrid webhook")
        return JSONResponse({"received": len(parsed), **counts})

    # -- archive --------------------------------------------------------------------------------

    def _issues(self) -> dict[str, tuple[Issue, Rendered]]:
        """Issues that have been sent, by slug, rendered (cached until the file changes)."""
        sent = {row["issue"] for row in sent_issues(self.store)}
        found: dict[str, tuple[Issue, Rendered]] = {}
        for path in sorted(self.config.issues_dir.glob("*.md")):
            key = (path, path.stat().st_mtime)
            if key not in self._rendered:
                try:
                    issue = parse(path, base_url=self.config.newsletter.base_url)
                except ContentError:
                    continue
                self._rendered[key] = (issue, render(issue, self.config.newsletter, self.config.templates_dir))
            issue, rendered = self._rendered[key]
            if issue.slug in sent:
                found[issue.slug] = (issue, rendered)
        return found

    async def archive(self, request: Request) -> Response:
        issues = await run_in_threadpool(self._issues)
        ordered = sorted(issues.values(), key=lambda pair: (pair[0].date, pair[0].slug), reverse=True)
        return self.page(request, "archive.html", {"issues": [
            {"slug": i.slug, "subject": placeholders.fill(i.subject, {}, html_escape=False), "date": i.date,
             "preheader": i.preheader} for i, _r in ordered]})

    async def archive_issue(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        issues = await run_in_threadpool(self._issues)
        if slug not in issues:
            return self.error(request, 404, "There is no such issue in the archive.")
        _issue, rendered = issues[slug]
        # The web version: personal placeholders give way to neutral text, never anyone's data.
        values = {"name": "reader", "email": "your address", "unsubscribe_url": f"{self.base_url}/archive",
                  "view_url": f"{self.base_url}/archive/{slug}"}
        return HTMLResponse(placeholders.fill(rendered.html, values, html_escape=True))

    async def feed(self, request: Request) -> Response:
        issues = await run_in_threadpool(self._issues)
        ordered = sorted(issues.values(), key=lambda pair: (pair[0].date, pair[0].slug), reverse=True)
        atom = "http://www.w3.org/2005/Atom"
        root = ET.Element("feed", xmlns=atom)
        ET.SubElement(root, "title").text = self.config.newsletter.name
        ET.SubElement(root, "id").text = f"{self.base_url}/archive"
        ET.SubElement(root, "link", href=f"{self.base_url}/archive/feed.xml", rel="self")
        ET.SubElement(root, "link", href=f"{self.base_url}/archive")
        newest = ordered[0][0].date if ordered else dt.date(2000, 1, 1)
        ET.SubElement(root, "updated").text = f"{newest.isoformat()}T00:00:00Z"
        ET.SubElement(ET.SubElement(root, "author"), "name").text = self.config.newsletter.name
        for issue, _rendered in ordered:
            entry = ET.SubElement(root, "entry")
            ET.SubElement(entry, "title").text = placeholders.fill(issue.subject, {"name": "reader"}, html_escape=False)
            ET.SubElement(entry, "id").text = f"{self.base_url}/archive/{issue.slug}"
            ET.SubElement(entry, "link", href=f"{self.base_url}/archive/{issue.slug}")
            ET.SubElement(entry, "updated").text = f"{issue.date.isoformat()}T00:00:00Z"
            ET.SubElement(entry, "summary").text = issue.preheader or issue.subject
        body = b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8")
        return Response(body, media_type="application/atom+xml")


class SecurityHeaders:
    """ASGI middleware adding SECURITY_HEADERS to every HTTP response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []),
                                      *((k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items())]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(config: Config, *, provider_factory: Callable[[], Provider] | None = None,
               clock: Callable[[], float] = time.time) -> Starlette:
    """The ASGI app for `config`; `provider_factory` and `clock` are for tests."""
    web = WebApp(config, provider_factory, clock)
    app = Starlette(
        routes=[
            Route("/subscribe/{list}", web.subscribe, methods=["GET", "POST"]),
            Route("/confirm/{token}", web.confirm, methods=["GET", "POST"]),
            Route("/unsubscribe/{token}", web.unsubscribe_route, methods=["GET", "POST"]),
            Route("/webhooks/sendgrid", web.sendgrid_webhook, methods=["POST"]),
            Route("/archive", web.archive),
            Route("/archive/feed.xml", web.feed),
            Route("/archive/{slug}", web.archive_issue),
        ],
        middleware=[Middleware(SecurityHeaders)],
    )
    app.state.web = web
    return app
