"""The delivery ledger: one row per (issue, subscriber), so nobody can be sent an issue twice.

Rows move pending → in_flight → sent | failed | unknown | skipped (a deferred row goes back to
pending with a time to retry). Every sending process registers as a worker and renews a lease
while it runs; it claims a batch (in_flight, carrying its worker id) in one short transaction
just before handing it to the provider, and marks the result after. Rows held by a worker whose
lease expired, or whose process is gone, may or may not have reached the provider: they become
unknown and are re-sent only on request. Several workers, on one machine or many, share a send.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import socket
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .consent import ACTIVE
from .schema import (
    DELIVERY_STATES as STATES,
    DONE,
    FAILED,
    IN_FLIGHT,
    LOST,
    PENDING,
    RUNNING,
    SENT,
    SKIPPED,
    UNKNOWN,
    WELCOME,
    deliveries,
    lists,
    memberships,
    sends,
    subscribers,
    suppressions,
    workers,
)
from .sql import Prepared, executemany, new_id, now, time_binder
from .store import Store

DEFERRED = "deferred"  # a provider's result for a row refused for now: it goes back to pending
DEFAULT_RETRY = 300.0  # seconds before a deferred row is tried again when the provider did not say


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: existing is the best we know
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _gone(worker: Any, horizon: dt.datetime, host: str) -> str:
    """Why a worker row (id, host, pid, state, heartbeat_at) is gone, or "" while its lease holds."""
    if worker.state != RUNNING:
        return "finished" if worker.state == DONE else "lost"
    if worker.heartbeat_at < horizon:
        return f"its lease expired (last heartbeat {worker.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)"
    if worker.host == host and not _alive(worker.pid):
        return "its process is gone"
    return ""


class LeaseLost(Exception):
    """This worker may claim no more: another worker found its lease expired and took its rows."""


class Holder(NamedTuple):
    """A worker holding in-flight rows of a send: `gone` says why it is gone, "" while it is alive."""

    worker: int | None
    rows: int
    host: str
    pid: int
    gone: str


class _ClaimSql(NamedTuple):
    holds: Prepared  # the worker's lease, seen inside the claim
    take: Prepared  # the next pending rows set in flight (their ids returned, but on SQLite)
    claimed: Prepared  # those rows with what decides whether each may still be mailed
    last: Prepared | None  # SQLite: the last id of the next rows to take


def _claimable(rows: Any) -> tuple[sa.ColumnElement[bool], ...]:
    """The rows of `deliveries` (or an alias of it) a claim may take: this send's pending ones past the
    cursor whose retry time, if any, has come (bound as b_issue, b_list, b_cursor, b_at)."""
    return (rows.c.issue == sa.bindparam("b_issue"), rows.c.list_id == sa.bindparam("b_list"),
            rows.c.state == PENDING, rows.c.subscriber_id > sa.bindparam("b_cursor"),
            sa.or_(rows.c.retry_after.is_(None), rows.c.retry_after <= sa.bindparam("b_at")))


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


def _mailable() -> sa.ColumnElement[bool]:
    """The one rule of who may be mailed, over a joined membership and subscriber: active, not suppressed.

    (A claim applies the same rule to each row in Python, to say why a row is skipped.)
    """
    return sa.and_(memberships.c.status == ACTIVE,
                   ~sa.exists().where(suppressions.c.email_key == subscribers.c.email_key))


def eligible(list_id: int) -> sa.Select[Any]:
    """Members of the list who may be mailed: the recipients of a new send."""
    return (
        sa.select(memberships.c.subscriber_id)
        .join(subscribers, subscribers.c.id == memberships.c.subscriber_id)
        .where(memberships.c.list_id == list_id, _mailable())
    )


P = ParamSpec("P")
R = TypeVar("R")


def _patient(method: Callable[Concatenate[Ledger, P], R]) -> Callable[Concatenate[Ledger, P], R]:
    """A ledger operation that outlasts a database going away for a moment (see `Store.patiently`).

    Each is one transaction that can run again: a claim whose commit was lost leaves rows in
    flight that were never handed over, and `retire` puts those back.
    """

    @functools.wraps(method)
    def patiently(self: Ledger, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.store.patiently(lambda: method(self, *args, **kwargs))

    return patiently


class Ledger:
    """The ledger rows of one (issue, list) send; the operations a send makes wait out a short outage."""

    def __init__(self, store: Store, issue: str, list_name: str, *, create: bool = True,
                 clock: Callable[[], dt.datetime] = now, segment: tuple[str, Any] | None = None,
                 enrolled: bool = False) -> None:
        self.store, self.issue, self.list_name = store, issue, list_name
        self.enrolled = enrolled  # a welcome mail: its rows come from members joining, never from the list
        self.segment = segment  # (its text, its compiled condition): who of the list a new send is fixed to
        self.now = clock  # this host's clock (a test moves it to play a host whose clock jumped)
        self.list_id = store.list_id(list_name, create=create)
        self._where = (deliveries.c.issue == issue, deliveries.c.list_id == self.list_id)
        self._cursor = 0  # claims move forward through subscriber ids
        self._claim_sql: _ClaimSql | None = None
        self._mark_sql: Prepared | None = None
        self._to_db: Callable[[dt.datetime], Any] | None = None

    def started(self) -> bool:
        return self.started_at() is not None

    def started_at(self) -> dt.datetime | None:
        """When this send started (aware, UTC), or None when it has not."""
        with self.store.engine.connect() as conn:
            at = conn.execute(
                sa.select(sends.c.started_at).where(sends.c.issue == self.issue, sends.c.list_id == self.list_id)
            ).scalar()
        return at.replace(tzinfo=dt.UTC) if at is not None else None

    def _audience(self) -> sa.Select[Any]:
        """Who of the list may be mailed and are in the segment, if there is one."""
        query = eligible(self.list_id)
        return query.where(self.segment[1]) if self.segment else query

    def _new_recipients(self) -> sa.Select[Any]:
        """Who a send starting now would fix as recipients: eligible, in the segment, not yet given this issue."""
        return self._audience().where(
            ~sa.exists().where(deliveries.c.issue == self.issue,
                               deliveries.c.subscriber_id == memberships.c.subscriber_id)
        )

    def _sendable_pending(self) -> sa.Select[Any]:
        return (
            sa.select(deliveries.c.subscriber_id)
            .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
            .join(memberships, sa.and_(memberships.c.subscriber_id == deliveries.c.subscriber_id,
                                       memberships.c.list_id == deliveries.c.list_id))
            .where(*self._where, deliveries.c.state == PENDING, _mailable())
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
                already = count(self._audience()) - recipients
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

    @_patient
    def start(self, subject: str, *, events: bool = True) -> bool:
        """Fix the recipients with one set-based insert; False when the send had started before.

        Rows are keyed by (issue, subscriber), so two sends of one issue starting at once, to
        the same list or to overlapping ones, can collide on PostgreSQL (SQLite serialises
        them). The loser's insert hits the primary key and is rolled back; it then tries again,
        now seeing the winner's rows, and adds only the people they do not cover.
        """
        if self.enrolled:
            return False
        for attempt in range(3):
            try:
                return self._start(subject, events)
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise
        return False

    def _start(self, subject: str, events: bool) -> bool:
        with self.store.write() as conn:
            started = conn.execute(sa.select(sends.c.segment, sends.c.recipients).where(*self._send)).first()
            if started is not None and not self._another_segment(started.segment):
                return False  # a resume: the rows fixed when it started are the send, whatever changed since
            stamp = self.now()
            insert = deliveries.insert().from_select(
                ["issue", "subscriber_id", "list_id", "state", "attempts", "updated_at"],
                self._new_recipients().with_only_columns(
                    sa.literal(self.issue), memberships.c.subscriber_id, sa.literal(self.list_id),
                    sa.literal(PENDING), sa.literal(0), sa.literal(stamp, sa.DateTime),
                ),
            )
            # Kept by request: SQLAlchemy keeps only an UPDATE's or DELETE's rowcount (psycopg's read -1).
            count = conn.execute(insert.execution_options(preserve_rowcount=True)).rowcount
            text = self.segment[0] if self.segment else None
            if started is None:
                conn.execute(sends.insert().values(issue=self.issue, list_id=self.list_id, subject=subject,
                                                   recipients=count, started_at=stamp, events=events, segment=text))
            else:  # one issue to a second segment of the list: its members not given the issue yet, once each
                conn.execute(sends.update().where(*self._send).values(  # not finished while these wait
                    recipients=started.recipients + count, segment=f"{started.segment}; {text}", finished_at=None))
            return True

    def welcome(self) -> bool:
        """Whether this send is a welcome mail, whose rows are added as members join (`welcome.enrol`)."""
        with self.store.engine.connect() as conn:
            return conn.execute(sa.select(sends.c.kind).where(*self._send)).scalar() == WELCOME

    def later(self) -> int:
        """Pending rows whose time has not come: deferred ones, a welcome sequence's later mails."""
        with self.store.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).where(
                *self._where, deliveries.c.state == PENDING, deliveries.c.retry_after > self.now())).scalar() or 0)

    def segments(self) -> str:
        """The segments this send was fixed to ("; " between), or "" for the whole list."""
        with self.store.engine.connect() as conn:
            return str(conn.execute(sa.select(sends.c.segment).where(*self._send)).scalar() or "")

    @property
    def _send(self) -> tuple[Any, ...]:
        return (sends.c.issue == self.issue, sends.c.list_id == self.list_id)

    def _another_segment(self, recorded: str | None) -> bool:
        """Whether this start names a segment the send was not fixed to yet (a send of the whole list
        already covers every segment of it)."""
        if not self.segment or recorded is None:
            return False
        return self.segment[0] not in recorded.split("; ")

    # -- workers and their leases -----------------------------------------------------------------

    @_patient
    def register(self) -> int:
        """Register this process as a worker on this send; returns its id (never reused)."""
        stamp = self.now()
        with self.store.write() as conn:
            return new_id(conn.execute(workers.insert().values(
                issue=self.issue, list_id=self.list_id, host=socket.gethostname(), pid=os.getpid(), state=RUNNING,
                sent=0, started_at=stamp, heartbeat_at=stamp)))

    def heartbeat(self, worker: int, sent: int) -> bool:
        """Renew the lease; False when it was lost (another worker took this one's rows as unknown)."""
        with self.store.write() as conn:
            return bool(conn.execute(
                workers.update().where(workers.c.id == worker, workers.c.state == RUNNING)
                .values(heartbeat_at=self.now(), sent=sent)
            ).rowcount)

    @_patient
    def retire(self, worker: int, sent: int, *, release: bool = True) -> None:
        """This worker is done. With `release` (every batch it handed over is recorded), rows it still
        holds in flight come from a claim whose commit it never heard of: they go back to pending."""
        with self.store.write() as conn:
            conn.execute(workers.update().where(workers.c.id == worker, workers.c.state == RUNNING)
                         .values(state=DONE, heartbeat_at=self.now(), sent=sent))
            if release:
                conn.execute(deliveries.update().where(*self._where, deliveries.c.state == IN_FLIGHT,
                                                       deliveries.c.worker_id == worker)
                             .values(state=PENDING, worker_id=None, claim=None, attempts=deliveries.c.attempts - 1,
                                     updated_at=self.now()))

    def live_workers(self, lease: float) -> list[dict[str, Any]]:
        """Workers on this send whose lease holds: id, host, pid, sent, started and last heartbeat."""
        horizon = self.now() - dt.timedelta(seconds=lease)
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                sa.select(workers.c.id, workers.c.host, workers.c.pid, workers.c.sent, workers.c.started_at,
                          workers.c.heartbeat_at)
                .where(workers.c.issue == self.issue, workers.c.list_id == self.list_id,
                       workers.c.state == RUNNING, workers.c.heartbeat_at >= horizon)
                .order_by(workers.c.id))]

    def holders(self, lease: float) -> list[Holder]:
        """Who holds this send's in-flight rows, and whether each is gone (then the rows are stranded
        until the next send turns them into unknown)."""
        horizon, host = self.now() - dt.timedelta(seconds=lease), socket.gethostname()
        with self.store.engine.connect() as conn:
            held = conn.execute(sa.select(deliveries.c.worker_id, sa.func.count()).where(
                *self._where, deliveries.c.state == IN_FLIGHT).group_by(deliveries.c.worker_id)).all()
            known = {w.id: w for w in conn.execute(
                sa.select(workers.c.id, workers.c.host, workers.c.pid, workers.c.state, workers.c.heartbeat_at)
                .where(workers.c.id.in_([wid for wid, _n in held if wid is not None] or [-1])))}
        found = []
        for wid, rows in held:
            w = known.get(wid)
            found.append(Holder(wid, int(rows), w.host if w else "", w.pid if w else 0,
                                _gone(w, horizon, host) if w else "unknown to this store"))
        return sorted(found, key=lambda h: h.worker or 0)

    @_patient
    def recover(self, lease: float, *, resend_unknown: bool = False, sweep: bool = True) -> int:
        """Rows held by workers that are gone become unknown; returns how many.

        A running worker is gone when its lease has expired or (on this host) its process no longer
        exists: it is marked lost, and from then on claims nothing (see `claim`). Its in_flight rows
        may or may not have reached the provider. `sweep` (what a send does when it starts) also
        takes in-flight rows of every worker that is not running, and of none. With
        `resend_unknown`, every unknown row of the send goes back to pending.
        """
        stamp = self.now()
        horizon, host = stamp - dt.timedelta(seconds=lease), socket.gethostname()
        with self.store.write() as conn:
            running = conn.execute(
                sa.select(workers.c.id, workers.c.host, workers.c.pid, workers.c.state, workers.c.heartbeat_at)
                .where(workers.c.issue == self.issue, workers.c.list_id == self.list_id, workers.c.state == RUNNING)
            ).all()
            expired = [w.id for w in running if _gone(w, horizon, host)]
            gone: list[int] = []
            if expired:
                # Taking the worker rows waits for a claim in progress (it holds them FOR SHARE), so the
                # update below sees every row that claim took.
                gone = list(conn.execute(
                    workers.update().where(workers.c.id.in_(expired), workers.c.state == RUNNING)
                    .values(state=LOST).returning(workers.c.id)).scalars())
            if sweep:
                live = sa.select(workers.c.id).where(workers.c.issue == self.issue, workers.c.list_id == self.list_id,
                                                     workers.c.state == RUNNING)
                orphaned: sa.ColumnElement[bool] = sa.or_(deliveries.c.worker_id.is_(None),
                                                          deliveries.c.worker_id.not_in(live))
            elif gone:
                orphaned = deliveries.c.worker_id.in_(gone)
            else:
                return 0
            lost = conn.execute(
                deliveries.update().where(*self._where, deliveries.c.state == IN_FLIGHT, orphaned)
                .values(state=UNKNOWN, error="interrupted while sending: may or may not have been delivered",
                        updated_at=stamp)
            ).rowcount or 0
            if resend_unknown:
                conn.execute(deliveries.update().where(*self._where, deliveries.c.state == UNKNOWN)
                             .values(state=PENDING, worker_id=None, claim=None, updated_at=stamp))
        return int(lost)

    # -- claiming and recording -------------------------------------------------------------------

    @_patient
    def held_elsewhere(self, worker: int) -> bool:
        """Whether other workers hold rows of this send in flight (asked often at a send's end: stops at one)."""
        query = sa.select(deliveries.c.subscriber_id).where(
            *self._where, deliveries.c.state == IN_FLIGHT, deliveries.c.worker_id != worker).limit(1)
        with self.store.engine.connect() as conn:
            return conn.execute(query).first() is not None

    @_patient
    def has_pending(self) -> bool:
        """Whether any row of this send still waits to be sent."""
        with self.store.engine.connect() as conn:
            return conn.execute(sa.select(deliveries.c.subscriber_id).where(
                *self._where, deliveries.c.state == PENDING).limit(1)).first() is not None

    @_patient
    def claim(self, worker: int, claim: int, size: int, lease: float) -> tuple[list[Claimed], Counter[str]]:
        """Take up to `size` pending rows for `worker` in one short transaction; LeaseLost when the worker
        is no longer running with a live lease (another worker found it gone).

        PostgreSQL skips rows another worker is claiming at the same moment (FOR UPDATE SKIP
        LOCKED); SQLite serialises claims (BEGIN IMMEDIATE). Rows whose member has left or been
        suppressed since the send started are marked skipped instead. The cursor walks the
        primary key; when it reaches the end it starts once more from the beginning, for rows
        released or deferred behind it.
        """
        for _ in range(2):
            claimed, skipped = self._claim_from(worker, claim, size, lease)
            if claimed or skipped or self._cursor == 0:
                return claimed, skipped
            self._cursor = 0
        return [], Counter()

    def _claim_from(self, worker: int, claim: int, size: int, lease: float) -> tuple[list[Claimed], Counter[str]]:
        stamp = self.now()
        with self.store.write() as conn:
            sql = self._claim_statements(conn)
            at = self._db_time(conn, stamp)
            # Claim only while this worker's lease holds, seen inside the claim's own transaction; FOR
            # SHARE makes a recovery that marks it lost wait for this claim (PostgreSQL).
            if not sql.holds.execute(conn, {"b_worker": worker,
                                            "b_since": self._db_time(conn, stamp - dt.timedelta(seconds=lease))}):
                raise LeaseLost(f"worker {worker} no longer holds a lease on {self.issue} to {self.list_name}")
            taken = self._take(conn, sql, {"b_issue": self.issue, "b_list": self.list_id, "b_cursor": self._cursor,
                                           "b_at": at, "b_size": size, "b_worker": worker, "b_claim": claim})
            if taken is None:
                return [], Counter()
            low, high = taken
            self._cursor = high
            rows = sql.claimed.execute(conn, {
                "b_issue": self.issue, "b_worker": worker, "b_claim": claim, "b_low": low, "b_high": high})
            make = Claimed._make
            claimed = [make(row[:4]) for row in rows if row[1] and row[5] is None and row[4] == ACTIVE]
            if len(claimed) == len(rows):
                return claimed, Counter()
            skipped: dict[str, list[int]] = defaultdict(list)
            for sid, email, _name, _attributes, status, suppressed in rows:
                if not email:  # erased: the row is a tombstone (or gone, in a store from before tombstones)
                    skipped["erased"].append(sid)
                elif suppressed is not None:
                    skipped["suppressed"].append(sid)
                elif status != ACTIVE:
                    skipped[status or "left the list"].append(sid)
            for reason, ids in skipped.items():
                self._set(conn, ids, SKIPPED, at, error=reason)
        return claimed, Counter({reason: len(ids) for reason, ids in skipped.items()})

    def _take(self, conn: Connection, sql: _ClaimSql, pick: dict[str, Any]) -> tuple[int, int] | None:
        """Set the next pending rows in flight: the range of ids they lie in, None when there are none."""
        if sql.last is not None:  # SQLite: nobody else claims meanwhile, so the rows are a range
            ((high,),) = sql.last.execute(conn, pick)
            if high is None:
                return None
            sql.take.execute(conn, {**pick, "b_high": high})
            return self._cursor + 1, int(high)
        taken = sorted(row[0] for row in sql.take.execute(conn, pick))
        return (taken[0], taken[-1]) if taken else None

    def _claim_statements(self, conn: Connection) -> _ClaimSql:
        """A claim's three statements, compiled once: building them anew cost more than running them."""
        if self._claim_sql is None:
            holds = sa.select(workers.c.id).where(
                workers.c.id == sa.bindparam("b_worker"), workers.c.state == RUNNING,
                workers.c.heartbeat_at >= sa.bindparam("b_since")).with_for_update(read=True)
            pick = deliveries.alias("pick")  # an alias, so the subquery is not correlated with the UPDATE
            picked = (
                sa.select(pick.c.subscriber_id).where(*_claimable(pick))
                .order_by(pick.c.subscriber_id).limit(sa.bindparam("b_size"))
                .with_for_update(skip_locked=True)
            )
            claiming = {"state": IN_FLIGHT, "worker_id": sa.bindparam("b_worker"), "claim": sa.bindparam("b_claim"),
                        "attempts": deliveries.c.attempts + 1, "updated_at": sa.bindparam("b_at")}
            last: Prepared | None = None
            if conn.dialect.name == "sqlite":
                # Claims are serialised (BEGIN IMMEDIATE): the rows to take are every pending one up to the
                # last of the next `size`, set in one range update (a quarter cheaper than an IN list).
                last = Prepared(sa.select(sa.func.max(picked.subquery().c.subscriber_id)), conn.dialect)
                take = (
                    deliveries.update()
                    .where(*_claimable(deliveries), deliveries.c.subscriber_id <= sa.bindparam("b_high"))
                    .values(**claiming)
                )
            else:
                # A CTE, not `IN (subquery)`: PostgreSQL may run a subquery more than once per statement,
                # each time taking another LIMIT's worth; a CTE with FOR UPDATE is evaluated once.
                chosen = picked.cte("chosen")
                take = (
                    deliveries.update()
                    .where(deliveries.c.issue == sa.bindparam("b_issue"),
                           deliveries.c.subscriber_id.in_(sa.select(chosen.c.subscriber_id)))
                    .values(**claiming)
                    .returning(deliveries.c.subscriber_id)
                )
            claimed = (
                sa.select(deliveries.c.subscriber_id, subscribers.c.email, subscribers.c.name,
                          subscribers.c.attributes, memberships.c.status, suppressions.c.reason)
                .select_from(deliveries)
                .outerjoin(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
                .outerjoin(memberships, sa.and_(memberships.c.subscriber_id == deliveries.c.subscriber_id,
                                                memberships.c.list_id == deliveries.c.list_id))
                .outerjoin(suppressions, suppressions.c.email_key == subscribers.c.email_key)
                .where(deliveries.c.issue == sa.bindparam("b_issue"),
                       deliveries.c.subscriber_id.between(sa.bindparam("b_low"), sa.bindparam("b_high")),
                       deliveries.c.worker_id == sa.bindparam("b_worker"),
                       deliveries.c.claim == sa.bindparam("b_claim"),
                       deliveries.c.state == IN_FLIGHT)
                .order_by(deliveries.c.subscriber_id)
            )
            self._claim_sql = _ClaimSql(Prepared(holds, conn.dialect), Prepared(take, conn.dialect),
                                        Prepared(claimed, conn.dialect), last)
        return self._claim_sql

    def _set(self, conn: Connection, ids: list[int], state: str, stamp: Any, *, error: str | None = None,
             message_ids: Mapping[int, str | None] | None = None, worker: int | None = None, retry_after: Any = None,
             attempts: int = 0) -> None:
        """Set the state of rows by id (rows a worker holds, when `worker` is given), with each row's
        message id when given: one statement for the lot, whether the ids are shared or one per row."""
        if not ids:
            return
        values: dict[str, Any] = {"state": state, "updated_at": sa.bindparam("b_at"), "error": sa.bindparam("b_error")}
        if message_ids is not None:
            values["message_id"] = sa.bindparam("b_mid")
        if state == PENDING:
            values.update(worker_id=None, claim=None, retry_after=sa.bindparam("b_retry"))
        if attempts:
            values["attempts"] = deliveries.c.attempts + attempts
        where = [deliveries.c.issue == sa.bindparam("b_issue"), deliveries.c.subscriber_id == sa.bindparam("b_id")]
        if worker is not None:
            # (no IN list: executemany statements are compiled once, without expanding parameters)
            where += [deliveries.c.worker_id == sa.bindparam("b_worker"),
                      sa.or_(deliveries.c.state == IN_FLIGHT, deliveries.c.state == UNKNOWN)]
        executemany(conn, deliveries.update().where(*where).values(**values), [
            {"b_issue": self.issue, "b_id": i, "b_at": stamp, "b_error": error,
             "b_mid": message_ids.get(i) if message_ids is not None else None, "b_worker": worker,
             "b_retry": retry_after} for i in ids
        ])

    @_patient
    def mark(self, worker: int, claim: int, results: Iterable[tuple[int, str, str, str, float]],
             batch: list[int]) -> None:
        """Record (subscriber_id, state, message_id, error, retry_in) results of one provider call.

        Only rows this worker still holds change: in_flight, or unknown if its lease was taken
        meanwhile (the real outcome is better than unknown). A deferred row goes back to
        pending, to be tried after `retry_in` seconds. When one outcome covers the whole batch
        (the common case) it is one range update over the claim.
        """
        results = list(results)
        outcomes = {outcome[1:] for outcome in results}  # (state, message_id, error, retry_in)
        stamp = self.now()
        with self.store.write() as conn:
            if len(outcomes) == 1 and len(results) == len(batch):
                ((state, message_id, error, _retry_in),) = outcomes
                if state != DEFERRED:
                    self._whole_claim(conn).execute(conn, {
                        "b_issue": self.issue, "b_low": min(batch), "b_high": max(batch), "b_worker": worker,
                        "b_claim": claim, "b_state": state, "b_mid": message_id or None, "b_error": error or None,
                        "b_at": self._db_time(conn, stamp)})
                    return
            groups: dict[tuple[str, str, float], dict[int, str | None]] = defaultdict(dict)
            for sid, state, message_id, error, retry_in in results:
                groups[(state, error, retry_in)][sid] = message_id or None
            at = self._db_time(conn, stamp)
            for (state, error, retry_in), rows in groups.items():
                if state == DEFERRED:
                    retry = self._db_time(conn, stamp + dt.timedelta(seconds=retry_in or DEFAULT_RETRY))
                    self._set(conn, list(rows), PENDING, at, error=error or None, worker=worker, retry_after=retry)
                else:
                    self._set(conn, list(rows), state, at, error=error or None, message_ids=rows, worker=worker)

    def _db_time(self, conn: Connection, value: dt.datetime) -> Any:
        if self._to_db is None:
            self._to_db = time_binder(conn.dialect)
        return self._to_db(value)

    def _whole_claim(self, conn: Connection) -> Prepared:
        """The one outcome of a whole claim, over its id range: compiled once, as the claim is."""
        if self._mark_sql is None:
            self._mark_sql = Prepared(
                deliveries.update()
                .where(deliveries.c.issue == sa.bindparam("b_issue"),
                       deliveries.c.subscriber_id.between(sa.bindparam("b_low"), sa.bindparam("b_high")),
                       deliveries.c.worker_id == sa.bindparam("b_worker"),
                       deliveries.c.claim == sa.bindparam("b_claim"),
                       sa.or_(deliveries.c.state == IN_FLIGHT, deliveries.c.state == UNKNOWN))
                .values(state=sa.bindparam("b_state"), message_id=sa.bindparam("b_mid"),
                        error=sa.bindparam("b_error"), updated_at=sa.bindparam("b_at")),
                conn.dialect)
        return self._mark_sql

    @_patient
    def release(self, worker: int, ids: list[int]) -> None:
        """Put claimed rows back to pending: the provider certainly did not take them.

        The claim cursor moves back too, so this run can still pick them up.
        """
        if not ids:
            return
        self._cursor = min(self._cursor, min(ids) - 1)
        with self.store.write() as conn:
            self._set(conn, ids, PENDING, self._db_time(conn, self.now()), error=None, worker=worker, attempts=-1)

    @_patient
    def counts(self) -> dict[str, int]:
        with self.store.engine.connect() as conn:
            return delivery_counts(conn, self.issue, self.list_id)

    @_patient
    def finish_if_done(self, counts: dict[str, int] | None = None) -> bool:
        counts = counts or self.counts()
        if counts[PENDING] or counts[IN_FLIGHT]:
            return False
        with self.store.write() as conn:
            conn.execute(sends.update().where(sends.c.issue == self.issue, sends.c.list_id == self.list_id,
                                              sends.c.finished_at.is_(None)).values(finished_at=self.now()))
        return True

    @_patient
    def problems(self, limit: int | None = 50) -> list[tuple[str, str, str, int]]:
        """(email, state, error, attempts) of failed and unknown rows (all of them with `limit=None`)."""
        with self.store.engine.connect() as conn:
            return [(str(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in conn.execute(
                sa.select(sa.func.coalesce(sa.func.nullif(subscribers.c.email, ""), "(erased)"), deliveries.c.state,
                          sa.func.coalesce(deliveries.c.error, ""), deliveries.c.attempts)
                .select_from(deliveries.outerjoin(subscribers, subscribers.c.id == deliveries.c.subscriber_id))
                .where(*self._where, deliveries.c.state.in_([FAILED, UNKNOWN]))
                .order_by(deliveries.c.subscriber_id).limit(limit)
            )]


def delivery_counts(conn: Connection, issue: str, list_id: int) -> dict[str, int]:
    """How many rows of one send are in each state (every state, zero included): the one counts query."""
    found: dict[str, int] = dict(conn.execute(
        sa.select(deliveries.c.state, sa.func.count())
        .where(deliveries.c.issue == issue, deliveries.c.list_id == list_id).group_by(deliveries.c.state)
    ).all())
    return {state: found.get(state, 0) for state in STATES}


# What a provider's event says of a row whose outcome was unknown: it reached the provider (sent),
# or the provider says it was not delivered (failed). Any other kind settles nothing.
SETTLED_BY = MappingProxyType({"processed": SENT, "delivered": SENT, "deferred": SENT, "opened": SENT, "clicked": SENT,
                               "complained": SENT, "unsubscribed": SENT, "bounced": FAILED, "blocked": FAILED,
                               "dropped": FAILED})


def settle_unknown(conn: Connection, issue: str, subscriber_id: int, kind: str, *, source: str, at: dt.datetime,
                   message_id: str = "", reason: str = "") -> bool:
    """Settle an `unknown` row by what the provider reported for exactly that issue and subscriber.

    The row keeps what settled it in its error column (its history), so `status` shows why it is no
    longer in doubt and `--resend-unknown` re-sends only what still is. Rows in any other state are
    left alone: a bounce of a sent message is the consent rules' business, not the ledger's.
    """
    state = SETTLED_BY.get(kind)
    if state is None:
        return False
    note = f"was unknown; settled by {source}: {kind} at {at:%Y-%m-%d %H:%M:%S} UTC" + (f": {reason}" if reason else "")
    values: dict[str, Any] = {"state": state, "error": note, "updated_at": now()}
    if message_id:
        values["message_id"] = message_id[:200]
    return bool(conn.execute(deliveries.update().where(
        deliveries.c.issue == issue, deliveries.c.subscriber_id == subscriber_id, deliveries.c.state == UNKNOWN,
    ).values(**values)).rowcount)


def last_finished(store: Store) -> dict[str, float]:
    """Per list, when (a Unix time) its newest finished send of an issue ended; lists with none are left out."""
    query = (sa.select(lists.c.name, sa.func.max(sends.c.finished_at)).join(lists, lists.c.id == sends.c.list_id)
             .where(sends.c.kind.is_(None), sends.c.finished_at.is_not(None)).group_by(lists.c.name))
    with store.engine.connect() as conn:
        return {name: _unix(at) for name, at in conn.execute(query)}


def sent_issues(store: Store, list_name: str | None = None, *, welcome: bool = False) -> list[dict[str, Any]]:
    """Issues whose send has started (and welcome mails, with `welcome`), newest first: issue slug, list,
    subject, counts, times."""
    query = (sa.select(sends.c.issue, lists.c.name, sends.c.subject, sends.c.recipients, sends.c.started_at,
                       sends.c.finished_at)
             .join(lists, lists.c.id == sends.c.list_id).order_by(sends.c.started_at.desc()))
    if not welcome:
        query = query.where(sends.c.kind.is_(None))
    if list_name:
        query = query.where(lists.c.name == list_name)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def oldest_pending(store: Store) -> float | None:
    """Since when (a Unix time) the oldest row that may go now has waited, over the sends not finished;
    None when none waits. A row deferred or a welcome mail's later step counts from its time."""
    since = sa.func.coalesce(deliveries.c.retry_after, deliveries.c.updated_at)
    query = (sa.select(sa.func.min(since)).select_from(deliveries)
             .join(sends, sa.and_(sends.c.issue == deliveries.c.issue, sends.c.list_id == deliveries.c.list_id))
             .where(sends.c.finished_at.is_(None), deliveries.c.state == PENDING, since <= now()))
    with store.engine.connect() as conn:
        found = conn.execute(query).scalar()
    return None if found is None else _unix(found)


def _unix(at: dt.datetime | str) -> float:
    """A stored UTC time as a Unix time. SQLite's MIN or MAX over a column comes back as text."""
    if isinstance(at, str):
        at = dt.datetime.fromisoformat(at)
    return float(at.replace(tzinfo=dt.UTC).timestamp())
