"""The subscriber store: lists, subscribers, memberships and suppressions, on SQLAlchemy Core.

Any SQLAlchemy URL works; the engine and the bulk SQL helpers are in `sql`, the cross-process
lock in `locks`, the tables in `schema`; every membership change is decided by `consent`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import addresses, consent, fields, locks
from .config import Config, ListSettings
from .consent import ACTIVE, STATUSES
from .errors import FieldError, StoreError, StoreUnavailable, TokenError
from .schema import (
    PENDING,
    SKIPPED,
    UNKNOWN,
    deliveries,
    events,
    history,
    lists,
    memberships,
    subscribers,
    suppressions,
    tags,
    upgrade,
)
from .sql import InQueries, insert_new, make_engine, now, transient
from .welcome import Mail, enrol

if TYPE_CHECKING:
    from .tokens import Claims

log = logging.getLogger(__name__)
T = TypeVar("T")

ERASED = ""  # the address of an erased subscriber's tombstone row
SUPPRESSED = "suppressed"  # what export and import call a member whose address is suppressed


@dataclass(frozen=True)
class Subscriber:
    id: int
    email: str
    name: str
    attributes: dict[str, str]
    created_at: dt.datetime
    memberships: dict[str, tuple[str, dt.datetime, str]] = field(default_factory=dict)
    suppressed: str = ""
    tags: tuple[str, ...] = ()


class Store:
    """The store behind one config: lists are declared there and created here on first use."""

    def __init__(self, config: Config, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine or make_engine(config.store.url)
        self._writer = self.engine.execution_options(write=True)
        self.version = self.patiently(lambda: upgrade(self.engine))
        self._list_ids: dict[str, int] = {}
        self.select_in = InQueries().run

    def close(self) -> None:
        self.engine.dispose()

    def patiently(self, call: Callable[[], T]) -> T:
        """`call()`, tried again with back-off while the database is away, for up to `[store] retry_for`
        seconds; then StoreUnavailable. `call` must be one transaction that is safe to run again."""
        deadline = time.monotonic() + self.config.store.retry_for
        delay, warned = 0.1, False
        while True:
            try:
                return call()
            except sa.exc.DBAPIError as exc:
                if not transient(exc):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self.unavailable(exc) from None
                if not warned:
                    log.warning("%s; trying again for up to %.0f s", self.unavailable(exc),
                                self.config.store.retry_for)
                    warned = True
                time.sleep(min(delay, left))  # the last try comes at the deadline
                delay = min(2 * delay, 2.0)

    def unavailable(self, exc: sa.exc.DBAPIError) -> StoreUnavailable:
        """One line for a database that is away: where it is and why; for a full disk, the space left."""
        reason = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
        where = self.engine.url.render_as_string(hide_password=True)
        database = self.engine.url.database or ""
        if self.engine.dialect.name == "sqlite" and database and any(w in reason for w in ("full", "disk", "space")):
            folder = Path(database).resolve().parent
            free = shutil.disk_usage(folder).free
            return StoreUnavailable(f"the store at {where} cannot be written: {reason} ({free / 1e6:,.1f} MB free "
                                    f"on the disk holding {folder}); free some space and run the command again")
        return StoreUnavailable(f"the store at {where} is unreachable: {reason}")

    def write(self) -> Any:
        """A write transaction (on SQLite: BEGIN IMMEDIATE, so read-then-write is atomic)."""
        return self._writer.begin()

    def lock(self, name: str, busy_message: str) -> AbstractContextManager[threading.Event]:
        """Hold an exclusive, crash-safe lock called `name`, or raise LockedError at once; the Event it
        yields is set if the lock is lost while held (see `locks`)."""
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            return locks.file_lock(self.engine.url.database or "", name, busy_message)
        if dialect == "postgresql":
            return locks.session_lock(self.engine, name, busy_message)
        raise StoreError(f"locks are implemented for SQLite and PostgreSQL stores, not {dialect}")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # lists

    def list_id(self, name: str, conn: Connection | None = None, *, create: bool = True) -> int:
        """The id of declared list `name`, creating its row on first use (0 when absent and not `create`)."""
        if name in self._list_ids:
            return self._list_ids[name]
        declared: ListSettings = self.config.list(name)
        if not create:
            with self.engine.connect() as c:
                return int(c.execute(sa.select(lists.c.id).where(lists.c.name == name)).scalar() or 0)
        with self._conn(conn) as c:
            find = sa.select(lists.c.id).where(lists.c.name == name)
            found = c.execute(find).scalar()
            if found is None:  # another program's first use at the same time may win: its row is the one
                insert_new(c, lists, {"name": name, "title": declared.title, "description": declared.description,
                                      "created_at": now()})
                found = c.execute(find).scalar_one()
        self._list_ids[name] = int(found)
        return self._list_ids[name]

    def reachable(self) -> bool:
        """True when the database answers a query: what a health check asks."""
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.select(sa.literal(1)))
        except sa.exc.SQLAlchemyError:
            return False
        return True

    def list_counts(self) -> dict[str, dict[str, int]]:
        """Per declared list: members by status, and how many active ones are suppressed (only reads: a
        scrape of /metrics asks this too)."""
        result = {name: dict.fromkeys((*STATUSES, "suppressed"), 0) for name in sorted(self.config.lists)}
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(lists.c.name, memberships.c.status, sa.func.count())
                .join(memberships, memberships.c.list_id == lists.c.id)
                .group_by(lists.c.name, memberships.c.status)
            )
            for name, status, count in rows:
                if name in result:
                    result[name][status] = count
            # From the suppressions (few) to their members, not the members (a million) to theirs.
            suppressed = sa.select(subscribers.c.id).select_from(
                suppressions.join(subscribers, subscribers.c.email_key == suppressions.c.email_key))
            rows = conn.execute(
                sa.select(lists.c.name, sa.func.count())
                .select_from(memberships.join(lists))
                .where(memberships.c.status == ACTIVE, memberships.c.subscriber_id.in_(suppressed))
                .group_by(lists.c.name)
            )
            for name, count in rows:
                if name in result:
                    result[name]["suppressed"] = count
        return result

    # subscribers

    def _conn(self, conn: Connection | None) -> Any:
        if conn is not None:
            return nullcontext(conn)
        return self.write()

    def find(self, email: str, conn: Connection | None = None) -> Subscriber | None:
        """The subscriber with this address (any case), with memberships and suppression."""
        key = addresses.normalize(email).key
        with self._conn(conn) as c:
            row = c.execute(sa.select(subscribers).where(subscribers.c.email_key == key)).mappings().first()
            suppressed = c.execute(
                sa.select(suppressions.c.reason).where(suppressions.c.email_hash == addresses.hash_key(key))
            ).scalar()
            if row is None:
                return None
            found = c.execute(
                sa.select(lists.c.name, memberships.c.status, memberships.c.changed_at, memberships.c.source)
                .join(lists, lists.c.id == memberships.c.list_id)
                .where(memberships.c.subscriber_id == row["id"])
            )
            member = {name: (status, at, source) for name, status, at, source in found}
            tagged = tuple(c.execute(sa.select(tags.c.tag).where(tags.c.subscriber_id == row["id"])
                                     .order_by(tags.c.tag)).scalars())
        return Subscriber(
            id=row["id"], email=row["email"], name=row["name"], attributes=json.loads(row["attributes"]),
            created_at=row["created_at"], memberships=member, suppressed=suppressed or "", tags=tagged,
        )

    def tag(self, email: str, given: str | list[str], source: str = "cli", *, remove: bool = False) -> list[str]:
        """Add (or with `remove`, take away) tags of one subscriber; the tags that changed, each a line of
        their history. FieldError for a tag that is not one (see `fields.tags`)."""
        wanted = fields.tags(given)
        with self.write() as conn:
            self._hold(conn, addresses.normalize(email).key)
            found = self.find(email, conn)
            if found is None:
                raise StoreError(f"no subscriber with address {email.strip()!r}")
            changed = [t for t in wanted if (t in found.tags) == remove]
            if remove and changed:
                conn.execute(tags.delete().where(tags.c.subscriber_id == found.id, tags.c.tag.in_(changed)))
            elif changed:
                if len(found.tags) + len(changed) > fields.TAGS_PER_PERSON:
                    raise FieldError("tags", f"{found.email} would have {len(found.tags) + len(changed)} tags; at "
                                             f"most {fields.TAGS_PER_PERSON}")
                stamp = now()
                conn.execute(tags.insert(), [{"subscriber_id": found.id, "tag": t, "tagged_at": stamp}
                                             for t in changed])
            if changed:
                _log(conn, found.id, None, None, "untagged" if remove else "tagged", source, ", ".join(changed), now())
            return changed

    def rename(self, subscriber_id: int, name: str) -> bool:
        """Set the name a person is greeted by (cleaned by `fields.name`); True when it changed."""
        name = fields.name(name)
        with self.write() as conn:
            return bool(conn.execute(subscribers.update().where(subscribers.c.id == subscriber_id,
                                                                subscribers.c.name != name)
                                     .values(name=name, updated_at=now())).rowcount)

    def get(self, email: str) -> Subscriber:
        found = self.find(email)
        if found is None:
            raise StoreError(f"no subscriber with address {email.strip()!r}")
        return found

    def add(self, email: str, list_name: str, *, name: str = "", attributes: Mapping[str, str] | None = None,
            status: str = ACTIVE, source: str = "cli") -> tuple[Subscriber | None, str]:
        """Add or update one subscriber on one list; returns it and what happened.

        What happened is "added", "updated", "already present" or "kept out (why)" (see `consent`).
        A suppressed address that is not stored yet stays unstored, and None is returned for it.
        """
        address = addresses.normalize(email)
        with self.write() as conn:
            list_id = self.list_id(list_name, conn)
            outcome = self._upsert(conn, address, list_id, fields.name(name), fields.attributes(attributes or {}),
                                   status, source, consent.ADD)
            return self.find(address.email, conn), outcome

    def _upsert(self, conn: Connection, address: addresses.Address, list_id: int, name: str,
                attributes: dict[str, str], status: str, source: str, action: str) -> str:
        """One `add`: store or update the person, then apply the consent action to the membership."""
        stamp = now()
        row = self._hold(conn, address.key)
        suppressed = self.is_suppressed(address.key, conn)
        if row is None and suppressed:
            return f"kept out ({kept_out_reason(True, None)})"  # a suppressed (perhaps erased) address is not stored
        details_changed, added = False, False
        if row is None:
            row, added = self._store_person(conn, address, name, json.dumps(attributes), stamp)
        subscriber_id = row.id
        if not added:
            merged_name, merged_attrs = merge(row.name, json.loads(row.attributes), name, attributes)
            if (merged_name, merged_attrs) != (row.name, json.loads(row.attributes)):
                conn.execute(subscribers.update().where(subscribers.c.id == subscriber_id).values(
                    name=merged_name, attributes=json.dumps(merged_attrs), updated_at=stamp))
                details_changed = True
        current, left_at = self._membership(conn, subscriber_id, list_id)
        decision = consent.decide(action, current, suppressed=suppressed, requested=status, left=left_at is not None)
        self._apply(conn, subscriber_id, list_id, current, decision, source)
        outcome = consent.outcome(decision, created=current is None and not decision.kept_out,
                                  details_changed=details_changed)
        if decision.kept_out:
            outcome += f" ({kept_out_reason(suppressed, left_at)})"
        return outcome

    @staticmethod
    def _hold(conn: Connection, key: str) -> Any:  # a Row or None (Row's generic form differs in 2.0 and 2.1)
        """The person with this address key (id, name, attributes), their row locked until the transaction
        ends, so that changes about one person run one after another and each decides from what the one
        before it wrote (PostgreSQL: FOR UPDATE; SQLite's write transactions already run one at a time)."""
        return conn.execute(sa.select(subscribers.c.id, subscribers.c.name, subscribers.c.attributes)
                            .where(subscribers.c.email_key == key).with_for_update()).first()

    def _store_person(self, conn: Connection, address: addresses.Address, name: str, attributes: str,
                      stamp: dt.datetime) -> tuple[Any, bool]:
        """Store a new person and `_hold` their row; with False when another transaction stored the address
        first (theirs is kept: two programs adding one address at once both end with the one row)."""
        added = insert_new(conn, subscribers, {"email": address.email, "email_key": address.key, "name": name,
                                               "attributes": attributes, "created_at": stamp, "updated_at": stamp})
        row = self._hold(conn, address.key)
        if row is None:
            raise StoreError(f"the subscriber {address.email!r} just stored is not in the store")
        return row, added

    def is_suppressed(self, key: str, conn: Connection) -> bool:
        return conn.execute(
            sa.select(suppressions.c.reason).where(suppressions.c.email_hash == addresses.hash_key(key))
        ).first() is not None

    @staticmethod
    def _membership(conn: Connection, subscriber_id: int, list_id: int) -> tuple[str | None, dt.datetime | None]:
        """(status, when the person left) of one membership; (None, None) when there is none."""
        found = conn.execute(
            sa.select(memberships.c.status, memberships.c.left_at).where(memberships.c.subscriber_id == subscriber_id,
                                                                         memberships.c.list_id == list_id)
        ).first()
        return (None, None) if found is None else (str(found.status), found.left_at)

    @staticmethod
    def _apply(conn: Connection, subscriber_id: int, list_id: int, current: str | None,
               decision: consent.Decision, source: str, reason: str | None = None, issue: str | None = None) -> None:
        """Write a consent decision about one membership, and its line in the history."""
        if not decision.changed or decision.status is None:
            return
        stamp = now()
        values = membership_values(decision.status, stamp, source)
        if current is None:
            conn.execute(memberships.insert().values(subscriber_id=subscriber_id, list_id=list_id, **values))
        else:
            conn.execute(memberships.update().where(memberships.c.subscriber_id == subscriber_id,
                                                    memberships.c.list_id == list_id).values(**values))
        _log(conn, subscriber_id, list_id, current, decision.status, source, reason, stamp, issue)

    @staticmethod
    def apply_to_memberships(conn: Connection, subscriber_id: int, action: str, source: str,
                             list_id: int | None = None) -> None:
        """Apply a consent action to all of a person's memberships (or one list's) in set-based statements."""
        where = [memberships.c.subscriber_id == subscriber_id]
        if list_id is not None:
            where.append(memberships.c.list_id == list_id)
        stamp = now()
        for target, sources in consent.targets(action).items():
            matching = [*where, memberships.c.status.in_(sources)]
            if target == consent.REMOVED:
                conn.execute(memberships.delete().where(*matching))
                continue
            changed = conn.execute(sa.select(memberships.c.list_id, memberships.c.status).where(*matching)).all()
            conn.execute(memberships.update().where(*matching).values(**membership_values(target, stamp, source)))
            for list_, before in changed:
                _log(conn, subscriber_id, list_, before, target, source, None, stamp)

    def change(self, subscriber_id: int, list_name: str, action: str, source: str, reason: str | None = None, *,
               issue: str | None = None) -> bool:
        """Apply a consent action to one membership; True when its status changed. `issue`: the issue
        whose link asked for it, kept in the history (the report counts it for that issue)."""
        with self.write() as conn:
            return self._change(conn, subscriber_id, self.list_id(list_name, conn), action, source, reason, issue)

    def _change(self, conn: Connection, subscriber_id: int, list_id: int, action: str, source: str,
                reason: str | None = None, issue: str | None = None) -> bool:
        conn.execute(sa.select(subscribers.c.id).where(subscribers.c.id == subscriber_id).with_for_update())
        row = conn.execute(
            sa.select(memberships.c.status, subscribers.c.email_key)
            .join(subscribers, subscribers.c.id == memberships.c.subscriber_id)
            .where(memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == list_id)
        ).first()
        if row is None:
            return False
        decision = consent.decide(action, str(row.status), suppressed=self.is_suppressed(row.email_key, conn))
        self._apply(conn, subscriber_id, list_id, str(row.status), decision, source, reason, issue)
        return decision.changed

    def unsubscribe(self, email: str, list_name: str | None, source: str = "cli") -> list[str]:
        """Unsubscribe from one list, or from every list when `list_name` is None; returns the lists changed."""
        subscriber = self.get(email)
        names = [list_name] if list_name else sorted(subscriber.memberships)
        if list_name:
            self.config.list(list_name)
            if list_name not in subscriber.memberships:
                raise StoreError(f"{subscriber.email} is not on list {list_name!r}")
        return [n for n in names if self.change(subscriber.id, n, consent.UNSUBSCRIBE, source)]

    def suppress(self, email: str, reason: str, source: str = "cli", conn: Connection | None = None) -> bool:
        """Suppress an address on every list, known or not; True when it was not suppressed yet."""
        address = addresses.normalize(email)
        with self._conn(conn) as c:
            person = self._hold(c, address.key)
            if not insert_new(c, suppressions, {"email_hash": address.hash, "email_key": address.key,
                                                "reason": fields.clip(reason, fields.REASON) or "suppressed",
                                                "source": fields.clip(source, fields.SOURCE), "created_at": now()}):
                return False  # suppressed already, perhaps by another route at this moment (a webhook, the mailbox)
            if person is not None:
                self.apply_to_memberships(c, person.id, consent.SUPPRESS, source)
                _log(c, person.id, None, None, SUPPRESSED, source, reason, now())
            return True

    def unsuppress(self, email: str, reason: str, source: str = "cli") -> None:
        """Take an address off the suppression list (a mistaken suppress), recorded with its reason."""
        address = addresses.normalize(email)
        with self.write() as conn:
            row = conn.execute(sa.select(suppressions.c.email_key, suppressions.c.reason)
                               .where(suppressions.c.email_hash == address.hash)).first()
            if row is None:
                raise StoreError(f"{address.email} is not suppressed")
            if row.email_key is None:
                raise StoreError(f"{address.email} was erased on request; add them again only if they ask to be")
            conn.execute(suppressions.delete().where(suppressions.c.email_hash == address.hash))
            found = conn.execute(sa.select(subscribers.c.id).where(subscribers.c.email_key == address.key)).scalar()
            if found is not None:
                _log(conn, found, None, SUPPRESSED, "unsuppressed", source, reason, now())

    def history(self, subscriber_id: int) -> list[dict[str, Any]]:
        """Every recorded change of this person's memberships and suppression, oldest first."""
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                sa.select(history.c.at, lists.c.name.label("list"), history.c.from_status, history.c.to_status,
                          history.c.source, history.c.reason, history.c.issue)
                .select_from(history.outerjoin(lists, lists.c.id == history.c.list_id))
                .where(history.c.subscriber_id == subscriber_id).order_by(history.c.id))]

    def record(self, email: str) -> dict[str, Any]:
        """Everything held on one person (a data-access request): details, lists, history, sends, events."""
        s = self.get(email)
        with self.engine.connect() as conn:
            sent = [dict(r._mapping) for r in conn.execute(
                sa.select(deliveries.c.issue, lists.c.name.label("list"), deliveries.c.state, deliveries.c.updated_at)
                .join(lists, lists.c.id == deliveries.c.list_id)
                .where(deliveries.c.subscriber_id == s.id).order_by(deliveries.c.updated_at))]
            tracked = [dict(r._mapping) for r in conn.execute(
                sa.select(events.c.kind, events.c.issue, events.c.list_name, events.c.reason, events.c.occurred_at)
                .where(events.c.subscriber_id == s.id).order_by(events.c.occurred_at))]
        return {
            "email": s.email, "name": s.name, "attributes": s.attributes, "tags": list(s.tags),
            "created_at": s.created_at,
            "suppressed": s.suppressed or None,
            "lists": {name: {"status": status, "since": at, "source": source}
                      for name, (status, at, source) in s.memberships.items()},
            "history": self.history(s.id), "deliveries": sent, "events": tracked,
        }

    def remove(self, email: str, source: str = "cli") -> None:
        """Erase a person: what is held on them goes; only a hash stays, so no import brings them back.

        The subscriber row stays as an empty tombstone (no address, name or attributes) so that
        its id is never given to anyone else: old links and ledger rows keep pointing at nobody.
        """
        address = addresses.normalize(email)
        with self.write() as conn:
            row = self._hold(conn, address.key)
            if row is None and not self.is_suppressed(address.key, conn):
                raise StoreError(f"no subscriber with address {email.strip()!r}")
            if row is not None:
                # Nothing still waiting in a send goes to an erased person.
                conn.execute(
                    deliveries.update()
                    .where(deliveries.c.subscriber_id == row.id, deliveries.c.state.in_([PENDING, UNKNOWN]))
                    .values(state=SKIPPED, error="erased", updated_at=now())
                )
                self.apply_to_memberships(conn, row.id, consent.ERASE, source)
                conn.execute(history.delete().where(history.c.subscriber_id == row.id))
                conn.execute(tags.delete().where(tags.c.subscriber_id == row.id))
                conn.execute(subscribers.update().where(subscribers.c.id == row.id).values(
                    email=ERASED, email_key=f"erased:{row.id}", name="", attributes="{}", updated_at=now()))
            if not insert_new(conn, suppressions, {"email_hash": address.hash, "email_key": None,
                                                   "reason": "erased on request", "source": source,
                                                   "created_at": now()}):
                conn.execute(suppressions.update().where(suppressions.c.email_hash == address.hash)
                             .values(email_key=None))

    def request_subscription(self, email: str, list_name: str, name: str = "",
                             source: str = "web") -> tuple[int | None, bool]:
        """A subscribe request (double opt-in): (subscriber id, whether to mail a confirmation).

        `consent.REQUEST` decides; a confirmation is mailed while the membership is unconfirmed.
        An unauthenticated form never changes what is held about a known address, and a
        suppressed address that is not stored (an erased person) is not stored again.
        """
        address = addresses.normalize(email)
        with self.write() as conn:
            list_id = self.list_id(list_name, conn)
            row = self._hold(conn, address.key)
            suppressed = self.is_suppressed(address.key, conn)
            if row is None:
                if suppressed:
                    return None, False
                row, _added = self._store_person(conn, address, fields.name(name), "{}", now())
            subscriber_id = row.id
            current, _left = self._membership(conn, subscriber_id, list_id)
            decision = consent.decide(consent.REQUEST, current, suppressed=suppressed)
            self._apply(conn, subscriber_id, list_id, current, decision, source)
            return subscriber_id, not decision.kept_out and decision.status == consent.UNCONFIRMED

    def confirm(self, subscriber_id: int, list_name: str, source: str = "web confirm",
                welcome: Sequence[Mail] = ()) -> str | None:
        """Activate an unconfirmed membership; returns the status after, None when there is none.

        A member who joins so is enrolled in the list's `welcome` mails in the same transaction, so
        no crash between the two can leave them out (see `newsletter.welcome`)."""
        with self.write() as conn:
            list_id = self.list_id(list_name, conn)
            if self._change(conn, subscriber_id, list_id, consent.CONFIRM, source) and welcome:
                enrol(conn, subscriber_id, list_id, welcome, now())
        found = self.membership(subscriber_id, list_name)
        return found[1] if found else None

    def membership(self, subscriber_id: int, list_name: str) -> tuple[str, str] | None:
        """(email, status) of one membership, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(subscribers.c.email, memberships.c.status)
                .join(memberships, memberships.c.subscriber_id == subscribers.c.id)
                .join(lists, lists.c.id == memberships.c.list_id)
                .where(subscribers.c.id == subscriber_id, lists.c.name == list_name)
            ).first()
        return (row.email, row.status) if row else None

    def linked_membership(self, claims: Claims) -> tuple[str, str] | None:
        """(email, status) of the membership a signed link names, or None. A link acts only for its own
        person: TokenError when the subscriber it names no longer has the address it was made for."""
        found = self.membership(claims.subscriber_id, claims.list_name)
        if found is not None and not claims.for_address(found[0]):
            raise TokenError("this link was made for someone else")
        return found

    def members(self, list_name: str, status: str | None = ACTIVE, batch: int = 5000) -> Iterator[dict[str, Any]]:
        """Stream a list's members in id order, in pages of `batch`.

        Each is a dict of email, name, attributes, status (SUPPRESSED when the address is
        suppressed, whatever the membership says), subscribed_at, status_changed_at, source and tags.
        `status` filters on that status; ACTIVE means "would be mailed"; None is everyone.
        """
        list_id = self.list_id(list_name)
        last = 0
        suppressed = suppressions.c.email_hash.is_not(None)
        while True:
            query = (
                sa.select(subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.attributes,
                          subscribers.c.created_at, memberships.c.status, memberships.c.changed_at,
                          memberships.c.source, suppressions.c.email_hash)
                .join(memberships, memberships.c.subscriber_id == subscribers.c.id)
                .outerjoin(suppressions, suppressions.c.email_key == subscribers.c.email_key)
                .where(memberships.c.list_id == list_id, subscribers.c.id > last)
                .order_by(subscribers.c.id).limit(batch)
            )
            if status == SUPPRESSED:
                query = query.where(suppressed)
            elif status:
                query = query.where(memberships.c.status == status, ~suppressed)
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
                tagged: dict[int, list[str]] = {}
                if rows:  # the page's tags in one query, over the same id range
                    for sid, tag in conn.execute(sa.select(tags.c.subscriber_id, tags.c.tag).where(
                            tags.c.subscriber_id > last, tags.c.subscriber_id <= rows[-1].id).order_by(tags.c.tag)):
                        tagged.setdefault(sid, []).append(tag)
            if not rows:
                return
            for row in rows:
                yield {"id": row.id, "email": row.email, "name": row.name, "attributes": json.loads(row.attributes),
                       "status": SUPPRESSED if row.email_hash else row.status, "subscribed_at": row.created_at,
                       "status_changed_at": row.changed_at, "source": row.source, "tags": tagged.get(row.id, [])}
            last = rows[-1].id

    def suppression_list(self) -> Iterator[dict[str, Any]]:
        """Every suppressed address (the address is empty for an erased person: only its hash is kept)."""
        with self.engine.connect() as conn:
            for row in conn.execute(sa.select(suppressions).order_by(suppressions.c.created_at,
                                                                     suppressions.c.email_hash)):
                yield {"email": row.email_key or "", "email_sha256": row.email_hash, "reason": row.reason,
                       "source": row.source, "suppressed_at": row.created_at}


def left_at_after(status: str, stamp: Any, before: Any) -> Any:
    """When the person left the list, after a change to `status`: now for a status that leaves,
    nothing once active again (their own confirmation, or a first import), else as before."""
    if status in consent.LEFT:
        return stamp
    return None if status == consent.ACTIVE else before


_UNCHANGED: Any = object()


def membership_values(status: str, stamp: Any, source: str) -> dict[str, Any]:
    """A membership's columns after a change to `status` (`left_at` only where it changes)."""
    values: dict[str, Any] = {"status": status, "changed_at": stamp, "source": fields.clip(source, fields.SOURCE)}
    left = left_at_after(status, stamp, _UNCHANGED)
    if left is not _UNCHANGED:
        values["left_at"] = left
    return values


def _log(conn: Connection, subscriber_id: int, list_id: int | None, before: str | None, after: str, source: str,
         reason: str | None, at: dt.datetime, issue: str | None = None) -> None:
    """One line of a person's history (`list_id` None: about the address, such as a suppression)."""
    conn.execute(history.insert().values(subscriber_id=subscriber_id, list_id=list_id, from_status=before,
                                         to_status=after, source=fields.clip(source, fields.SOURCE),
                                         reason=fields.clip(reason, fields.REASON) if reason else None, at=at,
                                         issue=issue))


def kept_out_reason(suppressed: bool, left_at: dt.datetime | None) -> str:
    """Why an import or `add` kept a person out, in words for the operator."""
    if suppressed:
        return "the address is suppressed"
    when = f" on {left_at:%Y-%m-%d}" if left_at else ""
    return f"they left the list{when}; only their own confirmation brings them back"


def merge(old_name: str, old_attrs: Mapping[str, str], name: str,
          attrs: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """New non-empty values win; empty cells never erase what is stored."""
    merged = dict(old_attrs)
    merged.update({k: v for k, v in attrs.items() if v != ""})
    return (name or old_name), merged
