"""Membership and consent rules: the one table of what each action does to a membership.

Every path that changes a membership (the subscribe form, a confirmation link, CSV import,
`subscribers add`, unsubscribe links and commands, provider bounces and complaints, suppression
and erasure) asks this table, so the rule "a leaver is never made active again except by their
own confirmation" has one home. Suppression also acts on the address: a suppressed address is
kept out of every list whatever its membership says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from .statuses import Membership

UNCONFIRMED, ACTIVE, UNSUBSCRIBED = Membership.UNCONFIRMED, Membership.ACTIVE, Membership.UNSUBSCRIBED
BOUNCED, COMPLAINED = Membership.BOUNCED, Membership.COMPLAINED
STATUSES: Final = tuple(Membership)
LEFT: Final = (UNSUBSCRIBED, BOUNCED, COMPLAINED)  # never made active again except by a confirmed resubscribe

# Actions
REQUEST = "subscribe request"  # the public form (double opt-in)
CONFIRM = "confirm"  # the person's own confirmation link
IMPORT = "import"  # CSV import, with a requested status (active or unconfirmed)
ADD = "add"  # `subscribers add` (and the library's add_subscriber), likewise
UNSUBSCRIBE = "unsubscribe"  # a link, one-click, the command, or the provider's unsubscribe event
BOUNCE = "bounce"
COMPLAINT = "complaint"
SUPPRESS = "suppress"  # the address goes on the suppression list; memberships stay as a record
ERASE = "erase"  # the person is erased on request: memberships go, a hash of the address stays
ACTIONS: Final = (REQUEST, CONFIRM, IMPORT, ADD, UNSUBSCRIBE, BOUNCE, COMPLAINT, SUPPRESS, ERASE)

# Targets that are not statuses
SAME = "same"  # the membership stays as it is
REQUESTED = "requested"  # the status the import or add asked for
KEPT_OUT = "kept out"  # refused: the person left, and only their confirmation brings them back
REMOVED = "removed"  # the membership row is deleted

NONE = None  # no membership on this list yet

def _row(none: str, unconfirmed: str, active: str, unsubscribed: str, bounced: str,
         complained: str) -> Mapping[str | None, str]:
    """What one action does from each status, in the order of the table's columns."""
    return MappingProxyType({NONE: none, UNCONFIRMED: unconfirmed, ACTIVE: active, UNSUBSCRIBED: unsubscribed,
                             BOUNCED: bounced, COMPLAINED: complained})


_IMPORTED: Final = _row(REQUESTED, REQUESTED, SAME, KEPT_OUT, KEPT_OUT, KEPT_OUT)

# TRANSITIONS[action][current status or None] -> a status, SAME, REQUESTED, KEPT_OUT or REMOVED.
TRANSITIONS: Final[Mapping[str, Mapping[str | None, str]]] = MappingProxyType({
    #                 none          unconfirmed   active        unsubscribed  bounced       complained
    REQUEST:     _row(UNCONFIRMED,  SAME,         SAME,         UNCONFIRMED,  UNCONFIRMED,  KEPT_OUT),
    CONFIRM:     _row(KEPT_OUT,     ACTIVE,       SAME,         SAME,         SAME,         SAME),
    IMPORT:      _IMPORTED,
    ADD:         _IMPORTED,
    UNSUBSCRIBE: _row(SAME,         UNSUBSCRIBED, UNSUBSCRIBED, SAME,         SAME,         SAME),
    BOUNCE:      _row(SAME,         BOUNCED,      BOUNCED,      BOUNCED,      SAME,         SAME),
    COMPLAINT:   _row(SAME,         COMPLAINED,   COMPLAINED,   COMPLAINED,   SAME,         SAME),
    SUPPRESS:    _row(SAME,         SAME,         SAME,         SAME,         SAME,         SAME),
    ERASE:       _row(SAME,         REMOVED,      REMOVED,      REMOVED,      REMOVED,      REMOVED),
})

# Actions a suppressed address is refused for: nothing may move it towards being mailed.
_REFUSED_WHEN_SUPPRESSED: Final = (REQUEST, CONFIRM, IMPORT, ADD)


@dataclass(frozen=True)
class Decision:
    """What an action does to one membership."""

    status: str | None  # the status after; None when there is (still) no membership
    changed: bool  # the status differs from before (or a membership is created)
    kept_out: bool  # refused because the person left or is suppressed


def decide(action: str, current: str | None, *, suppressed: bool = False, requested: str = ACTIVE,
           left: bool = False) -> Decision:
    """Apply the table to one membership whose status is `current` (None: not a member).

    `left`: the person left this list at some point and has not confirmed since. Such a person
    comes back only through their own confirmation: an import or `add` keeps them out even
    while a new request of theirs waits for confirmation.
    """
    if suppressed and action in _REFUSED_WHEN_SUPPRESSED:
        return Decision(current, False, True)
    if left and action in (IMPORT, ADD) and current != ACTIVE:
        return Decision(current, False, True)
    target = TRANSITIONS[action][current]
    if target == REQUESTED:
        if requested not in (ACTIVE, UNCONFIRMED):
            raise ValueError(f"an import or add can ask for {ACTIVE} or {UNCONFIRMED}, not {requested!r}")
        target = requested
    if target == KEPT_OUT:
        return Decision(current, False, True)
    if target == SAME:
        return Decision(current, False, False)
    if target == REMOVED:
        return Decision(None, current is not None, False)
    return Decision(target, target != current, False)


def targets(action: str) -> dict[str, tuple[str, ...]]:
    """For set-based updates of many memberships: each status (or REMOVED) the action leads to,
    with the statuses it leads there from. Requests, confirmations and imports are decided one
    row at a time (`decide`), since they depend on suppression and the requested status."""
    found: dict[str, list[str]] = {}
    for status, target in TRANSITIONS[action].items():
        if status is not None and target not in (SAME, KEPT_OUT, REQUESTED):
            found.setdefault(target, []).append(status)
    return {target: tuple(statuses) for target, statuses in found.items()}


def outcome(decision: Decision, *, created: bool, details_changed: bool) -> str:
    """How import and `add` report one row: added, updated, already present or kept out."""
    if decision.kept_out:
        return "kept out"
    if created:
        return "added"
    return "updated" if decision.changed or details_changed else "already present"
