"""Subscribe (double opt-in), confirm, unsubscribe and the preference page: every state change is a POST
behind a check."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..app import LinkedMembership, ListSettings, Membership, Newsletter, PreferencesSaved, SubscribeRequest
from ..errors import FieldError, InputError, LinkExpired, NewsletterError, TokenError, UnknownListError
from .background import Welcomer
from .challenge import ProofOfWork
from .pages import Pages
from .security import BAD_FORM, HONEYPOT, RateLimiter, csrf_for, csrf_ok, mask, read_form

log = logging.getLogger("newsletter.web")
LATEST = 5  # past issues the subscribe page shows


class Subscriptions:
    def __init__(self, nl: Newsletter, pages: Pages, clock: Callable[[], float], welcomer: Welcomer,
                 proof: ProofOfWork | None = None) -> None:
        self.nl, self.pages, self.clock, self.welcomer, self.proof = nl, pages, clock, welcomer, proof
        web = nl.config.web
        self.per_ip = RateLimiter(web.rate_limit_per_ip, web.rate_limit_window)
        self.per_email = RateLimiter(web.rate_limit_per_email, web.rate_limit_window)

    async def subscribe(self, request: Request) -> Response:
        name = request.path_params["list"]
        try:
            declared = self.nl.config.list(name)
        except UnknownListError:
            return self.pages.error(request, 404, "There is no such list.")
        csrf = csrf_for(request)
        if request.method != "POST":  # GET and HEAD only show, with the list's latest issues
            latest = (await run_in_threadpool(self.nl.issues.archive, name))[:LATEST]
            return self.pages.page(request, "subscribe.html", {"list": declared, "error": "", "email": "", "name": "",
                                                               "latest": latest}, csrf=csrf)
        form = await read_form(request)
        if form is None:
            return self.pages.error(request, 400, BAD_FORM)
        # A form embedded on one of the operator's own sites has no cookie of ours: its Origin,
        # checked against [web] allowed_origins, stands in for the CSRF token.
        embedded = request.headers.get("origin", "") in self.nl.config.web.allowed_origins
        if not embedded and not csrf_ok(request, form):
            return self._again(request, declared, "", "", "The form expired. Please send it again.", 403, csrf)
        return await self._request(request, declared, form, csrf)

    async def _request(self, request: Request, declared: ListSettings, form: Any, csrf: str) -> Response:
        """A subscribe form sent with its CSRF token (or from an allowed origin): a subscribe request,
        unless it comes too often, from a robot, or with an address or name that cannot be."""
        client = request.client.host if request.client else "unknown"
        if not self.per_ip.allow(client):
            return self.pages.error(request, 429, "Too many requests from your address. Please try again later.")
        email, person = str(form.get("email", "")).strip(), str(form.get("name", ""))
        if form.get(HONEYPOT):  # people never see the field; form-filling robots do
            log.info("subscribe form with the hidden field filled in, from %s: ignored", client)
            return self._check_inbox(request, email, declared.title)
        if not self._proved(form):
            return self._again(request, declared, email, person, "Your browser did not finish its check that you "
                               "are a person (it needs JavaScript, and takes a moment). Please send the form again.",
                               400, csrf)
        try:
            subscription = await run_in_threadpool(self.nl.links.subscribe, email, declared.name, person)
        except FieldError as exc:
            return self._again(request, declared, email, person, f"Please check your name: {exc}.", 400, csrf)
        except InputError:
            return self._again(request, declared, email, person, "That does not look like an email address.", 400, csrf)
        if subscription.should_mail and self.per_email.allow(subscription.address_key):
            await run_in_threadpool(self._mail_confirmation, subscription)
        return self._check_inbox(request, email, declared.title)

    def _again(self, request: Request, declared: ListSettings, email: str, name: str, error: str, status: int,
               csrf: str) -> Response:
        """The subscribe form again, filled in as it was sent, saying what to change."""
        return self.pages.page(request, "subscribe.html", {"list": declared, "email": email, "name": name,
                                                           "error": error}, status, csrf=csrf)

    def _proved(self, form: Any) -> bool:
        """The form carries an answer to a proof-of-work challenge of ours, when [web] proof_of_work asks for one."""
        return self.proof is None or self.proof.solved(str(form.get("altcha", "")))

    def _check_inbox(self, request: Request, email: str, title: str) -> Response:
        # The same answer whatever happened, so the form tells nobody who is subscribed.
        return self.pages.message(
            request, "Check your inbox",
            f"If {email} can be subscribed to {title}, a message with a confirmation "
            f"link is on its way. The link works for {self.nl.config.web.confirm_ttl // 3600} hours.")

    def _mail_confirmation(self, subscription: SubscribeRequest) -> None:
        try:
            result = self.nl.links.send_confirmation(subscription)
            if result.status != "sent":  # the provider's Result literal
                log.error("confirmation mail to subscriber %s: %s %s", subscription.subscriber_id, result.status,
                          result.error)
        except NewsletterError as exc:
            log.error("confirmation mail to subscriber %s failed: %s", subscription.subscriber_id, exc)

    def _bad_link(self, request: Request, exc: TokenError) -> Response:
        """What a confirmation link that cannot be used says, in words a reader knows, and what to do next."""
        if isinstance(exc, LinkExpired) and exc.list_name in self.nl.config.lists:
            declared = self.nl.config.lists[exc.list_name]
            return self.pages.error(
                request, 400, f"This confirmation link has expired: links work for "
                f"{self.nl.config.web.confirm_ttl // 3600} hours. Subscribe again to get a new one.",
                declared, ("Subscribe again", f"/subscribe/{declared.name}"))
        return self.pages.error(request, 400, "This confirmation link is incomplete or damaged. Open the whole link "
                                              "from the email (some mail programs break a long link across lines), "
                                              "or subscribe again.")

    async def _confirmation(self, request: Request, token: str) -> LinkedMembership | Response:
        """The membership a confirmation link is for, or the page that says why it cannot be used."""
        try:
            found = await run_in_threadpool(lambda: self.nl.links.confirmation_target(token, now=self.clock()))
        except TokenError as exc:
            return self._bad_link(request, exc)
        except UnknownListError:
            return self.pages.error(request, 404, "There is no such list.")
        return found if found is not None else self.pages.error(request, 404, "This subscription no longer exists.")

    async def confirm(self, request: Request) -> Response:
        token = request.path_params["token"]
        found = await self._confirmation(request, token)
        if isinstance(found, Response):
            return found
        declared = found.list
        if found.status == Membership.ACTIVE:  # the link opened again: nothing is left to do
            return self.pages.message(request, "You are already subscribed",
                                      f"{mask(found.email)} gets {declared.title} already: nothing more to do.",
                                      declared)
        csrf = csrf_for(request)
        if request.method != "POST":  # GET and HEAD only show
            return self.pages.page(request, "confirm.html", {"list": declared, "token": token}, csrf=csrf)
        form = await read_form(request)
        if form is None:
            return self.pages.error(request, 400, BAD_FORM)
        if not csrf_ok(request, form):
            return self.pages.page(request, "confirm.html", {"list": declared, "token": token,
                                   "error": "The form expired. Please press the button again."}, 403, csrf=csrf)
        try:
            _list, status = await run_in_threadpool(lambda: self.nl.links.confirm(token, now=self.clock()))
        except TokenError as exc:  # expired between the page and the button
            return self._bad_link(request, exc)
        if status is None:
            return self.pages.error(request, 404, "This subscription no longer exists.")
        if status != Membership.ACTIVE:
            return self.pages.message(request, "Not confirmed",
                                      f"This address cannot be subscribed to {declared.title}.", declared)
        self.welcomer.wake()
        welcome = "a welcome mail is on its way, and " if declared.welcome else ""
        return self.pages.message(request, "You are subscribed",
                                  f"Thank you: {welcome}{declared.title} will reach you from the next issue.", declared)

    async def unsubscribe(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            found = await run_in_threadpool(self.nl.links.unsubscribe_target, token)
        except TokenError:
            return self.pages.error(request, 400,
                                    "This unsubscribe link is not valid. Use the link from the newest email.")
        except UnknownListError:
            found = None
        if found is None:
            return self.pages.error(request, 404, "This subscription does not exist (any more).")
        if request.method != "POST":  # GET and HEAD only show  # never unsubscribes: mail scanners fetch every link
            return self.pages.page(request, "unsubscribe.html",
                                   {"list": found.list, "email": mask(found.email), "token": token,
                                    "done": found.status == Membership.UNSUBSCRIBED}, csrf=csrf_for(request))
        form = await read_form(request)
        if form is None:
            return self.pages.error(request, 400, BAD_FORM)
        one_click = form.get("List-Unsubscribe") == "One-Click"  # RFC 8058: sent without cookies
        if not one_click and not csrf_ok(request, form):
            return self.pages.error(request, 403, "The form expired. Please open the unsubscribe link again.")
        if form.get("undo") and not one_click:
            return await self._undo(request, found)
        await run_in_threadpool(lambda: self.nl.links.unsubscribe(token, source="one-click" if one_click else "web"))
        return self.pages.page(request, "unsubscribe.html", {"list": found.list, "email": mask(found.email),
                                                             "token": token, "done": True, "just_now": True},
                               csrf=csrf_for(request))

    async def _undo(self, request: Request, found: LinkedMembership) -> Response:
        """An unsubscribe taken back: a subscribe request like the form's, so they are back once they
        confirm from the mail it sends (a leaver never returns without their own confirmation)."""
        subscription = await run_in_threadpool(self.nl.links.subscribe, found.email, found.list.name)
        if subscription.should_mail and self.per_email.allow(subscription.address_key):
            await run_in_threadpool(self._mail_confirmation, subscription)
        return self._check_inbox(request, mask(found.email), found.list.title)

    async def preferences(self, request: Request) -> Response:
        """The person's lists and name, from the link in any issue's footer (the unsubscribe token)."""
        token = request.path_params["token"]
        try:
            shown = await run_in_threadpool(self.nl.links.preferences, token)
        except TokenError:
            return self.pages.error(request, 400, "This link is incomplete or damaged. Open the whole link from the "
                                                  "newest email.")
        if shown is None:
            return self.pages.error(request, 404, "This subscription does not exist (any more).")
        csrf = csrf_for(request)
        context = {"email": mask(shown.email), "name": shown.name, "lists": shown.lists, "token": token}
        if request.method != "POST":
            return self.pages.page(request, "preferences.html", context, csrf=csrf)
        form = await read_form(request)
        if form is None:
            return self.pages.error(request, 400, BAD_FORM)
        if not csrf_ok(request, form):
            return self.pages.page(request, "preferences.html", {**context, "error": "The form expired. Please "
                                   "make your choice again."}, 403, csrf=csrf)
        leave_all = form.get("leave") == "all"
        wanted = set() if leave_all else {str(v) for v in form.getlist("list")}
        name = None if leave_all else str(form.get("name", ""))
        try:
            saved = await run_in_threadpool(self.nl.links.save_preferences, token, wanted, name)
        except FieldError as exc:
            return self.pages.page(request, "preferences.html", {**context, "error": f"Please check your name: {exc}."},
                                   400, csrf=csrf)
        if saved is None:
            return self.pages.error(request, 404, "This subscription does not exist (any more).")
        for subscription in saved.requested:
            if self.per_email.allow(subscription.address_key):
                await run_in_threadpool(self._mail_confirmation, subscription)
        shown = await run_in_threadpool(self.nl.links.preferences, token) or shown
        return self.pages.page(request, "preferences.html",
                               {**context, "name": shown.name, "lists": shown.lists, "saved": self._said(saved)},
                               csrf=csrf)

    def _said(self, saved: PreferencesSaved) -> str:
        titles = self.nl.config.lists
        parts = []
        if saved.left:
            parts.append("You left " + ", ".join(titles[n].title for n in saved.left) + ": it takes effect at once.")
        if saved.requested:
            parts.append("To join " + ", ".join(titles[r.list_name].title for r in saved.requested)
                         + ", open the link in the mail we just sent you.")
        if saved.renamed:
            parts.append("Your name is saved.")
        return " ".join(parts) or "Nothing changed."
