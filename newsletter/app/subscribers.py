"""`nl.subscribers`: people and their lists: add, import, export, show, unsubscribe, suppress, erase."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ..statuses import Membership
from .part import Part

if TYPE_CHECKING:
    from ..csvio import ImportReport
    from ..store import Subscriber


class Subscribers(Part):
    def add(self, email: str, list_name: str, *, name: str = "", attributes: dict[str, str] | None = None,
            status: str = Membership.ACTIVE) -> tuple[Subscriber | None, str]:
        """Add one subscriber (or update their name and attributes); returns them and what happened."""
        return self.store.add(email, list_name, name=name, attributes=attributes, status=status)

    def get(self, email: str) -> Subscriber:
        return self.store.get(email)

    def history(self, email: str) -> list[dict[str, Any]]:
        """Every change of this person's memberships and suppression: when, from, to, source, why, which link."""
        return self.store.history(self.store.get(email).id)

    def record(self, email: str) -> dict[str, Any]:
        """Everything held on one person, for a data-access request."""
        return self.store.record(email)

    def unsubscribe(self, email: str, list_name: str | None) -> list[str]:
        """Unsubscribe from one list, or every list when `list_name` is None; returns the lists changed."""
        return self.store.unsubscribe(email, list_name)

    def tag(self, email: str, tags: list[str]) -> list[str]:
        """Tag a subscriber (lowercase words: letters, digits, '-', '_', '.'); returns the tags added."""
        return self.store.tag(email, tags)

    def untag(self, email: str, tags: list[str]) -> list[str]:
        """Take tags off a subscriber; returns the tags removed."""
        return self.store.tag(email, tags, remove=True)

    def count_where(self, list_name: str, expression: str) -> int:
        """How many of the list's members who may be mailed match a segment expression (see `segments`)."""
        from .. import segments

        return segments.count(self.store, list_name, expression)

    def explain_segment(self, list_name: str, expression: str) -> tuple[list[str], str, dict[str, Any], int]:
        """A segment expression's tree, its SQL with the bound parameters, and its count on the list."""
        from .. import segments

        return segments.explain(self.store, list_name, expression)

    def suppress(self, email: str, reason: str) -> bool:
        """Never mail this address again, on any list; False when it already was."""
        return self.store.suppress(email, reason)

    def unsuppress(self, email: str, reason: str) -> None:
        """Undo a mistaken suppression; the reason goes into the person's history."""
        self.store.unsuppress(email, reason)

    def erase(self, email: str) -> None:
        """Erase a person; a hash keeps the address from being stored again."""
        self.store.remove(email)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per declared list: members by status, and how many active members are suppressed."""
        return self.store.list_counts()

    def import_csv(self, path: str | os.PathLike[str], list_name: str, *, status: str = Membership.ACTIVE,
                   strict: bool = False, rejects_path: str | os.PathLike[str] | None = None,
                   progress: Callable[[int], None] | None = None, delimiter: str | None = None,
                   email_column: str | None = None) -> ImportReport:
        """Import subscribers from a CSV file with an 'email' column."""
        from ..csvio import import_csv

        return import_csv(self.store, Path(path), list_name, status=status, strict=strict,
                          rejects_path=Path(rejects_path) if rejects_path else None, progress=progress,
                          delimiter=delimiter, email_column=email_column)

    def export_csv(self, list_name: str, out: TextIO | str | os.PathLike[str],
                   status: str | None = Membership.ACTIVE, where: str = "") -> int:
        """Write a list as CSV to a stream, or whole-or-nothing to a file path; returns the rows written.

        `status`: "active" (who would be mailed), another status, "suppressed", or None for everyone;
        `where`: only the members matching a segment expression.
        """
        from .. import segments
        from ..csvio import export_csv

        only = segments.matching_ids(self.store, where) if where else None
        return write_csv(out, lambda stream: export_csv(self.store, list_name, stream, status, only))

    def export_suppressions(self, out: TextIO | str | os.PathLike[str]) -> int:
        """Write the suppression list as CSV; returns the rows written."""
        from ..csvio import export_suppressions

        return write_csv(out, lambda stream: export_suppressions(self.store, stream))


def write_csv(out: TextIO | str | os.PathLike[str], write: Callable[[TextIO], int]) -> int:
    """`write` to a stream, or to a file path whole or not at all; returns the rows written."""
    if not isinstance(out, (str, os.PathLike)):
        return write(out)
    import io

    from ..files import atomic_write

    buffer = io.StringIO()
    count = write(buffer)
    atomic_write(Path(out), buffer.getvalue())
    return count
