"""The delivery ledger: one row per (issue, subscriber), so nobody can be sent an issue twice.

Rows move pending → in_flight → sent | failed | unknown | skipped. A batch is claimed (marked
in_flight) in one transaction before the provider is called and marked with the result after.
Rows still in_flight when a run starts were claimed by a run that died mid-call: they may or may
not have reached the provider, so they become unknown and are re-sent only on request.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .consent import ACTIVE
from .schema import (
    DELIVERY_STATES as STATES,
)
from .schema import (
    FAILED,
    IN_FLIGHT,
    PENDING,
    SENT,
    SKIPPED,
    UNKNOWN,
    deliveries,
    lists,
    memberships,
    sends,
    subscribers,
    suppressions,
)
from .store import Prepared, Store, db_time, executemany, now


class Claimed(NamedTuple):
    """A recipient claimed for sending."""

    subscriber_id: int
    email: str
    name: str
    attributes_json: str = "{}"

    @property
    def attributes(self) -> dict[str, Any]:
        """Parsed on demand: most issues use no attribute, and a million parses add up."""
        return json.loads(self.attributes_json) if self.attributes_json != "{}" else {}


def _eligible(list_id: int) -> sa.Select[Any]:
    """Active members of the list who are not suppressed: the recipients of a new send."""
    return (
        sa.select(memberships.c.subscriber_id)
        .join(subscribers, subscribers.c.id == memberships.c.subscriber_id)
        .where(
            memberships.c.list_id == list_id,
            memberships.c.status == ACTIVE,
            ~sa.exists().where(suppressions.c.email_key == subscribers.c.email_key),
        )
    )


class Ledger:
    """The ledger rows of one (issue, list) send."""

    def __init__(self, store: Store, issue: str, list_name: str, *, create: bool = True) -> None:
        self.store, self.issue, self.list_name = store, issue, list_name
        self.list_id = store.list_id(list_name, create=create)
        self._where = (deliveries.c.issue == issue, deliveries.c.list_id == self.list_id)
        self._cursor = 0  # claims move forward through subscriber ids
        self._claim_sql: Prepared | None = None

    def started(self) -> bool:
        with self.store.engine.connect() as conn:
            return conn.execute(
                sa.select(sends.c.issue).where(sends.c.issue == self.issue, sends.c.list_id == self.list_id)
            ).first() is not None

    def _new_recipients(self) -> sa.Select[Any]:
        """Who a send starting now would fix as recipients: eligible, and not yet given this issue."""
        return _eligible(self.list_id).where(
            ~sa.exists().where(deliveries.c.issue == self.issue,
                               deliveries.c.subscriber_id == memberships.c.subscriber_id)
        )

    def _sendable_pending(self) -> sa.Select[Any]:
        return (
            sa.select(deliveries.c.subscriber_id)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .join(memberships, sa.and_(memberships.c.subscriber_id == deliveries.c.subscriber_id,
                                       memberships.c.list_id == deliveries.c.list_id))
            .where(*self._where, deliveries.c.state == PENDING, memberships.c.status == ACTIVE,
                   ~sa.exists().where(suppressions.c.email_key == subscribers.c.email_key))
        )

    def forecast(self) -> tuple[int, int, Counter[str]]:
        """(recipients, already sent, skipped by reason) of a send run now; reads only."""
        skipped: Counter[str] = Counter()
        with self.store.engine.connect() as conn:
            def count(query: sa.Select[Any]) -> int:
                return conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar() or 0

            if not self.started():
                recipients = count(self._new_recipients())
                for status, n in conn.execute(
                    sa.select(memberships.c.status, sa.func.count()).where(
                        memberships.c.list_id == self.list_id, memberships.c.status != ACTIVE
                    ).group_by(memberships.c.status)
                ):
                    skipped[status] = n
                suppressed = count(
                    sa.select(memberships.c.subscriber_id).join(subscribers).join(
                        suppressions, suppressions.c.email_key == subscribers.c.email_key
                    ).where(memberships.c.list_id == self.list_id, memberships.c.status == ACTIVE)
                )
                if suppressed:
                    skipped["suppressed"] = suppressed
                already = count(_eligible(self.list_id)) - recipients
                if already:
                    skipped["already sent this issue"] = already
                return recipients, 0, skipped
            recipients = count(self._sendable_pending())
            counts = self.counts()
            left = counts[PENDING] - recipients
            if left:
                skipped["left the list or suppressed since the send started"] = left
            if counts[UNKNOWN] + counts[IN_FLIGHT]:
                skipped["unknown (not re-sent without --resend-unknown)"] = counts[UNKNOWN] + counts[IN_FLIGHT]
            return recipients, counts[SENT], skipped

    def preview(self, limit: int) -> list[Claimed]:
        """The first `limit` recipients a send run now would mail; reads only."""
        if limit <= 0 or not self.list_id:
            return []
        ids = (self._sendable_pending() if self.started() else self._new_recipients()).subquery()
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.attributes)
                .join(ids, ids.c.subscriber_id == subscribers.c.id)
                .order_by(subscribers.c.id).limit(limit)
            ).all()
        return [Claimed(r.id, r.email, r.name, r.attributes) for r in rows]

    def start(self, subject: str) -> bool:
        """Fix the recipients with one set-based insert; False when the send had started before."""
        with self.store.write() as conn:
            if conn.execute(
                sa.select(sends.c.issue).where(sends.c.issue == self.issue, sends.c.list_id == self.list_id)
            ).first():
                return False
            stamp = now()
            insert = deliveries.insert().from_select(
                ["issue", "subscriber_id", "list_id", "state", "attempts", "updated_at"],
                self._new_recipients().with_only_columns(
                    sa.literal(self.issue), memberships.c.subscriber_id, sa.literal(self.list_id),
                    sa.literal(PENDING), sa.literal(0), sa.literal(stamp, sa.DateTime),
                ),
            )
            count = conn.execute(insert).rowcount
            conn.execute(sends.insert().values(issue=self.issue, list_id=self.list_id, subject=subject,
                                               recipients=count, started_at=stamp))
            return True

    def recover(self, resend_unknown: bool) -> int:
        """Turn rows a dead run left in_flight into unknown; with `resend_unknown`, unknown back to pending."""
        with self.store.write() as conn:
            lost = conn.execute(
                deliveries.update().where(*self._where, deliveries.c.state == IN_FLIGHT)
                .values(state=UNKNOWN, error="interrupted while sending: may or may not have been delivered",
                        updated_at=now())
            ).rowcount or 0
            if resend_unknown:
                conn.execute(deliveries.update().where(*self._where, deliveries.c.state == UNKNOWN)
                             .values(state=PENDING, updated_at=now()))
        return int(lost)

    def _claim_query(self, conn: Connection) -> Prepared:
        if self._claim_sql is None:
            self._claim_sql = Prepared(
                sa.select(deliveries.c.subscriber_id, subscribers.c.email, subscribers.c.name,
                          subscribers.c.attributes, memberships.c.status, suppressions.c.reason)
                .select_from(deliveries)
                .outerjoin(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .outerjoin(memberships, sa.and_(memberships.c.subscriber_id == deliveries.c.subscriber_id,
                                                memberships.c.list_id == deliveries.c.list_id))
                .outerjoin(suppressions, suppressions.c.email_key == subscribers.c.email_key)
                .where(deliveries.c.issue == sa.bindparam("b_issue"), deliveries.c.list_id == sa.bindparam("b_list"),
                       deliveries.c.state == PENDING, deliveries.c.subscriber_id > sa.bindparam("b_cursor"))
                .order_by(deliveries.c.subscriber_id)
                .limit(sa.bindparam("b_size")),
                conn.dialect,
            )
        return self._claim_sql

    def claim(self, size: int) -> tuple[list[Claimed], Counter[str]]:
        """Mark up to `size` pending rows in_flight; rows whose member left or was suppressed are skipped."""
        with self.store.write() as conn:
            rows = self._claim_query(conn).execute(
                conn, {"b_issue": self.issue, "b_list": self.list_id, "b_cursor": self._cursor, "b_size": size})
            if rows:
                self._cursor = rows[-1][0]
            claimed: list[Claimed] = []
            skipped: dict[str, list[int]] = defaultdict(list)
            for sid, email, name, attributes, status, suppressed in rows:
                if email is None:
                    skipped["erased"].append(sid)
                elif suppressed is not None:
                    skipped["suppressed"].append(sid)
                elif status != ACTIVE:
                    skipped[status or "left the list"].append(sid)
                else:
                    claimed.append(Claimed(sid, email, name, attributes))
            stamp = db_time(conn, now())
            for reason, ids in skipped.items():
                self._set(conn, ids, SKIPPED, stamp, error=reason)
            if claimed:
                # Everything still pending between the first and last claimed id is claimed:
                # one range update instead of one per row.
                conn.execute(
                    deliveries.update()
                    .where(*self._where, deliveries.c.state == PENDING,
                           deliveries.c.subscriber_id.between(claimed[0].subscriber_id, claimed[-1].subscriber_id))
                    .values(state=IN_FLIGHT, attempts=deliveries.c.attempts + 1, updated_at=now())
                )
        return claimed, Counter({reason: len(ids) for reason, ids in skipped.items()})

    def _set(self, conn: Connection, ids: list[int], state: str, stamp: Any, *, error: str | None = None,
             message_id: str | None = None, attempt: bool = False) -> None:
        if not ids:
            return
        values: dict[str, Any] = {"state": state, "updated_at": sa.bindparam("b_at"), "error": sa.bindparam("b_error")}
        if message_id is not None:
            values["message_id"] = sa.bindparam("b_mid")
        if attempt:
            values["attempts"] = deliveries.c.attempts + 1
        statement = deliveries.update().where(
            deliveries.c.issue == sa.bindparam("b_issue"), deliveries.c.subscriber_id == sa.bindparam("b_id"),
        ).values(**values)
        executemany(conn, statement, [
            {"b_issue": self.issue, "b_id": i, "b_at": stamp, "b_error": error, "b_mid": message_id} for i in ids
        ])

    def mark(self, results: Iterable[tuple[int, str, str, str]], batch: list[int] | None = None) -> None:
        """Record (subscriber_id, state, message_id, error) results of one provider call.

        When one outcome covers the whole claimed `batch` (the common case), it is one range
        update over the batch's in_flight rows; this process holds the send lock, so no other
        rows of this send are in flight.
        """
        groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
        for sid, state, message_id, error in results:
            groups[(state, message_id, error)].append(sid)
        with self.store.write() as conn:
            if batch and len(groups) == 1 and len(next(iter(groups.values()))) == len(batch):
                (state, message_id, error), = groups
                conn.execute(
                    deliveries.update()
                    .where(*self._where, deliveries.c.state == IN_FLIGHT,
                           deliveries.c.subscriber_id.between(min(batch), max(batch)))
                    .values(state=state, message_id=message_id or None, error=error or None, updated_at=now())
                )
                return
            stamp = db_time(conn, now())
            for (state, message_id, error), ids in groups.items():
                self._set(conn, ids, state, stamp, error=error or None, message_id=message_id or None)

    def release(self, ids: list[int]) -> None:
        """Put claimed rows back to pending: the provider certainly did not take them.

        The claim cursor moves back too, so this run can still pick them up.
        """
        if ids:
            self._cursor = min(self._cursor, min(ids) - 1)
        with self.store.write() as conn:
            self._set(conn, ids, PENDING, db_time(conn, now()), error=None)
            conn.execute(deliveries.update().where(*self._where, deliveries.c.subscriber_id.in_(ids))
                         .values(attempts=deliveries.c.attempts - 1))

    def counts(self) -> dict[str, int]:
        with self.store.engine.connect() as conn:
            found: dict[str, int] = dict(conn.execute(
                sa.select(deliveries.c.state, sa.func.count()).where(*self._where).group_by(deliveries.c.state)
            ).all())
        return {state: found.get(state, 0) for state in STATES}

    def finish_if_done(self, counts: dict[str, int] | None = None) -> bool:
        counts = counts or self.counts()
        if counts[PENDING] or counts[IN_FLIGHT]:
            return False
        with self.store.write() as conn:
            conn.execute(sends.update().where(sends.c.issue == self.issue, sends.c.list_id == self.list_id,
                                              sends.c.finished_at.is_(None)).values(finished_at=now()))
        return True

    def problems(self, limit: int = 50) -> list[tuple[str, str, str, int]]:
        """(email, state, error, attempts) of failed and unknown rows."""
        with self.store.engine.connect() as conn:
            return [(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in conn.execute(
                sa.select(sa.func.coalesce(subscribers.c.email, "(erased)"), deliveries.c.state,
                          sa.func.coalesce(deliveries.c.error, ""), deliveries.c.attempts)
                .select_from(deliveries.outerjoin(subscribers, subscribers.c.id == deliveries.c.subscriber_id))
                .where(*self._where, deliveries.c.state.in_([FAILED, UNKNOWN]))
                .order_by(deliveries.c.subscriber_id).limit(limit)
            )]


def sent_issues(store: Store, list_name: str | None = None) -> list[dict[str, Any]]:
    """Sends that have started, newest first: issue slug, list, subject, counts, times."""
    query = (sa.select(sends.c.issue, lists.c.name, sends.c.subject, sends.c.recipients, sends.c.started_at,
                       sends.c.finished_at)
             .join(lists, lists.c.id == sends.c.list_id).order_by(sends.c.started_at.desc()))
    if list_name:
        query = query.where(lists.c.name == list_name)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
