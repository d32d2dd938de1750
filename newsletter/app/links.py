"""`nl.links`: the subscriber's side: the signup form, subscribe requests, confirmation and unsubscribe links.

Each link is signed for one person on one list and acts only for them (`Store.linked_membership`).
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import consent
from ..errors import InputError
from ..statuses import Membership
from .part import Part

PREFERENCES = "preferences"  # the source of every change made on the preference page

if TYPE_CHECKING:  # tokens is imported where a link is checked: cron's `send --due` needs none
    from .. import tokens
    from ..config import ListSettings
    from ..providers import Result


@dataclass(frozen=True)
class SubscribeRequest:
    """A subscribe form submission, accepted: whether a confirmation mail should go out."""

    subscriber_id: int | None
    email: str
    address_key: str
    list_name: str
    name: str
    should_mail: bool


@dataclass(frozen=True)
class LinkedMembership:
    """The membership a signed unsubscribe link points at."""

    list: ListSettings
    email: str
    status: str


@dataclass(frozen=True)
class Preferences:
    """What the preference page shows one person: their name, and each list on offer with their status
    on it (None: not a member). The lists on offer are the public ones and any they are on."""

    email: str
    name: str
    lists: list[tuple[ListSettings, str | None]]


@dataclass(frozen=True)
class PreferencesSaved:
    """What a save of the preference page did: lists left at once, subscribe requests waiting for the
    person's confirmation (one mail each), whether the name changed."""

    left: list[str]
    requested: list[SubscribeRequest]
    renamed: bool


class Links(Part):
    _unsubscribe_signer: tokens.Signer | None = None  # made on first use: a send makes a million of its tokens

    def form(self, list_name: str) -> tuple[str, list[str]]:
        """The HTML form to paste on another site (`web/embed.html`), and what keeps it from working yet."""
        declared = self.config.list(list_name)
        action = f"{self.config.require_base_url().rstrip('/')}/subscribe/{list_name}"
        html = self._nl.issues.templates.web.get_template("embed.html").render(
            action=action, list=declared, base=self.config.require_base_url().rstrip("/"),
            proof_of_work=self.config.web.proof_of_work)
        notes = [] if self.config.web.allowed_origins else [
            f"{self.config.path}: [web] allowed_origins is empty: add the origin of the site that shows this form "
            f"(such as https://www.example.org), or the form's posts are refused"]
        return html, notes

    def subscribe(self, email: str, list_name: str, name: str = "") -> SubscribeRequest:
        """A subscribe request from the public form (double opt-in). InputError for a bad address."""
        from .. import addresses, fields

        address = addresses.normalize(email)
        person = fields.name(name)
        subscriber_id, should_mail = self.store.request_subscription(address.email, list_name, person)
        self._count(list_name, "subscribe")
        return SubscribeRequest(subscriber_id, address.email, address.key, list_name, person,
                                should_mail and subscriber_id is not None)

    def send_confirmation(self, request: SubscribeRequest) -> Result:
        """Mail the confirmation link of a subscribe request."""
        from ..send import send_confirmation

        if request.subscriber_id is None:
            raise InputError("this subscribe request has nobody to confirm")
        with closing(self._nl.provider()) as provider:
            return send_confirmation(self.config, self._nl.issues.templates, provider,
                                     subscriber_id=request.subscriber_id, email=request.email, name=request.name,
                                     list_name=request.list_name)

    def confirm(self, token: str, *, now: float | None = None) -> tuple[ListSettings, str | None]:
        """Act on a confirmation link: the list and the membership's status after (None: no membership).

        TokenError for a forged, altered or expired link; UnknownListError for a list no longer declared.
        """
        claims = self._confirm_claims(token, now)
        declared = self.config.list(claims.list_name)
        status = self.store.confirm(claims.subscriber_id, claims.list_name,
                                    welcome=self._nl.welcome.mails(claims.list_name))
        self._count(claims.list_name, "confirm")
        return declared, status

    def confirmation_target(self, token: str, *, now: float | None = None) -> LinkedMembership | None:
        """What a confirmation link points at, checking it without acting on it; None when gone."""
        return self._linked(self._confirm_claims(token, now))

    def unsubscribe_target(self, token: str) -> LinkedMembership | None:
        """What an unsubscribe link points at, without acting (mail scanners fetch links); None when gone."""
        return self._linked(self._unsubscribe_claims(token))

    def unsubscribe(self, token: str, *, source: str = "web") -> LinkedMembership | None:
        """Act on an unsubscribe link; repeating it is harmless. None when the membership is gone."""
        claims = self._unsubscribe_claims(token)
        self.config.list(claims.list_name)  # a list no longer declared: its one-line error, nothing changed
        self.store.change(claims.subscriber_id, claims.list_name, consent.UNSUBSCRIBE, source,
                          issue=claims.extra or None)
        self._count(claims.list_name, "unsubscribe")
        return self._linked(claims)

    def preferences(self, token: str) -> Preferences | None:
        """What the preference page of an issue's link shows; None when its person is gone. The link is
        the issue's unsubscribe token: whoever may leave from it may also choose what they get."""
        found = self.unsubscribe_target(token)
        if found is None:
            return None
        person = self.store.get(found.email)
        offered = [declared for declared in self.config.lists.values()
                   if declared.public or declared.name in person.memberships]
        return Preferences(person.email, person.name,
                           [(declared, person.memberships.get(declared.name, (None,))[0]) for declared in offered])

    def save_preferences(self, token: str, lists: set[str], name: str | None = None) -> PreferencesSaved | None:
        """Apply the preference page: leave the lists not in `lists` at once, ask to join the ones in it
        (a confirmation by mail, as any subscribe request: `send_confirmation` each of `requested`),
        and set the name when given. Every change goes through the consent rules, with source
        "preferences". None when the link's person is gone; FieldError for a name that cannot be."""
        shown = self.preferences(token)
        if shown is None:
            return None
        from .. import addresses

        person = self.store.get(shown.email)
        renamed = name is not None and self.store.rename(person.id, name)
        key = addresses.normalize(person.email).key
        left, requested = [], []
        for declared, status in shown.lists:
            wanted = declared.name in lists
            if not wanted and status in (Membership.ACTIVE, Membership.UNCONFIRMED):
                self.store.change(person.id, declared.name, consent.UNSUBSCRIBE, PREFERENCES)
                self._count(declared.name, "unsubscribe")
                left.append(declared.name)
            elif wanted and status != Membership.ACTIVE:
                subscriber_id, mail = self.store.request_subscription(person.email, declared.name, source=PREFERENCES)
                self._count(declared.name, "subscribe")
                if mail and subscriber_id is not None:
                    requested.append(SubscribeRequest(subscriber_id, person.email, key, declared.name,
                                                      name if name is not None else person.name, True))
        return PreferencesSaved(left, requested, renamed)

    def _count(self, list_name: str, action: str) -> None:
        self._nl.monitoring.metrics.subscriptions.labels(list_name, action).inc()

    def _linked(self, claims: tokens.Claims) -> LinkedMembership | None:
        declared = self.config.list(claims.list_name)
        found = self.store.linked_membership(claims)
        return LinkedMembership(declared, found[0], found[1]) if found else None

    def _confirm_claims(self, token: str, now: float | None) -> tokens.Claims:
        from .. import tokens

        claims = tokens.check_confirm(self.config.secret(), token, now=now, previous=self.config.previous_secrets())
        self.store.linked_membership(claims)
        return claims

    def _unsubscribe_claims(self, token: str) -> tokens.Claims:
        if self._unsubscribe_signer is None:
            from .. import tokens

            self._unsubscribe_signer = tokens.unsubscribe_signer(self.config.secret(), self.config.previous_secrets())
        claims = self._unsubscribe_signer.check(token)
        self.store.linked_membership(claims)
        return claims
