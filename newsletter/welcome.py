"""Welcome mails: a list's welcome and the sequence after it, each sent once to a member who joins.

Joining (confirming) enrols the member in the same transaction: one pending ledger row per mail,
keyed by (issue, subscriber) like any delivery, so a mail is never sent to anyone twice however
many processes send it (the web app in the background, `send --due`, the scheduler), and a
person who leaves first is skipped when the row is claimed. A later mail of the sequence waits
in its row until its day (`retry_after`). Nobody is enrolled by an import or `add`: only those who
join by their own confirmation from now on.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import PENDING, WELCOME, deliveries, sends
from .sql import insert_new


class Mail(NamedTuple):
    """One mail a joining member is enrolled in: its issue's slug and subject, and its day."""

    slug: str
    subject: str
    days: int


def enrol(conn: Connection, subscriber_id: int, list_id: int, mails: Sequence[Mail], at: dt.datetime) -> int:
    """Give a member who just joined a pending row for each mail (none they have had, or have waiting,
    from this list or another sharing the file); returns how many were added."""
    added = 0
    for mail in mails:
        # The first member of this mail starts its send.
        insert_new(conn, sends, {"issue": mail.slug, "list_id": list_id, "subject": mail.subject, "recipients": 0,
                                 "started_at": at, "kind": WELCOME})
        due = at + dt.timedelta(days=mail.days) if mail.days else None
        if not insert_new(conn, deliveries, {"issue": mail.slug, "subscriber_id": subscriber_id, "list_id": list_id,
                                             "state": PENDING, "attempts": 0, "updated_at": at, "retry_after": due}):
            continue
        conn.execute(sends.update().where(sends.c.issue == mail.slug, sends.c.list_id == list_id)
                     .values(recipients=sends.c.recipients + 1, finished_at=None))
        added += 1
    return added


def waiting(conn: Connection, slug: str, list_id: int, at: dt.datetime) -> bool:
    """Whether a row of this mail is pending and its day has come: whether a send has anything to do."""
    return conn.execute(sa.select(deliveries.c.subscriber_id).where(
        deliveries.c.issue == slug, deliveries.c.list_id == list_id, deliveries.c.state == PENDING,
        sa.or_(deliveries.c.retry_after.is_(None), deliveries.c.retry_after <= at)).limit(1)
    ).first() is not None
