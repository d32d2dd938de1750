"""The archive of sent issues: which issues went to which list, and each one's web version.

Issue files are parsed once, and web pages rendered once per list, each kept until its file
changes: the archive is read on every page view.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from . import placeholders
from .config import Config
from .content import Issue, load
from .errors import ContentError
from .ledger import sent_issues
from .render import article, render
from .store import Store
from .templates import Templates


@dataclass(frozen=True)
class ArchivedIssue:
    slug: str
    subject: str
    date: dt.date
    preheader: str
    path: Path
    lists: tuple[str, ...]  # the lists it was sent to
    sent_at: dt.datetime  # when its first send started (UTC)


class Archive:
    """The sent issues of one newsletter, with their parsed files and web pages kept per version."""

    def __init__(self, config: Config, templates: Templates) -> None:
        self.config, self.templates = config, templates
        self._issues: dict[tuple[Path, float], Issue] = {}
        self._pages: dict[tuple[Path, float, str], str] = {}

    def sent(self, store: Store, list_name: str | None = None, *, welcome: bool = False) -> list[ArchivedIssue]:
        """Issues that have been sent (to `list_name`, or to any list), newest first; unreadable files left out.
        With `welcome`, welcome mails too: their web versions are there for the link they carry, unlisted."""
        lists: dict[str, list[str]] = {}
        started: dict[str, dt.datetime] = {}
        for row in sent_issues(store, list_name, welcome=welcome):
            lists.setdefault(row["issue"], []).append(row["name"])
            started[row["issue"]] = min(started.get(row["issue"], row["started_at"]), row["started_at"])
        found: dict[str, ArchivedIssue] = {}
        files = set(self.config.issues_dir.glob("*.md")) | (set(self.config.welcome_files) if welcome else set())
        for path in sorted(files):
            parsed = self._issue(path)
            if parsed is not None and parsed.slug in lists:
                subject = placeholders.fill(parsed.subject, placeholders.neutral(), html_escape=False)
                found[parsed.slug] = ArchivedIssue(parsed.slug, subject, parsed.date, parsed.preheader, path,
                                                   tuple(sorted(lists[parsed.slug])), started[parsed.slug])
        return sorted(found.values(), key=lambda a: (a.date, a.slug), reverse=True)

    def web_version(self, store: Store, slug: str, list_name: str | None = None) -> str | None:
        """The web page of an issue sent to `list_name` (or to any list); None when it was not sent there.

        Personal placeholders give way to their defaults or nothing, never anyone's data, and the
        footer invites to subscribe to the list instead of offering to unsubscribe.
        """
        archived = next((a for a in self.sent(store, list_name, welcome=True) if a.slug == slug), None)
        if archived is None:
            return None
        target = list_name or archived.lists[0]
        base = self.config.require_base_url()
        key = (archived.path, archived.path.stat().st_mtime, target)
        if key not in self._pages:
            parsed = self._issue(archived.path)
            if parsed is None:  # broken since it was listed
                return None
            self._pages[key] = render(parsed, self.config.newsletter, self.templates,
                                      subscribe_url=f"{base}/subscribe/{target}").html
        values = placeholders.neutral(view_url=f"{base}/archive/{target}/{slug}")
        return placeholders.fill(self._pages[key], values, html_escape=True)

    def article(self, archived: ArchivedIssue) -> str | None:
        """The body of an archived issue as a feed carries it, with nobody's data in it; None when its
        file no longer reads."""
        key = (archived.path, archived.path.stat().st_mtime, "")
        if key not in self._pages:
            parsed = self._issue(archived.path)
            if parsed is None:
                return None
            self._pages[key] = article(parsed)
        return placeholders.fill(self._pages[key], placeholders.neutral(), html_escape=True)

    def _issue(self, path: Path) -> Issue | None:
        key = (path, path.stat().st_mtime)
        if key not in self._issues:
            try:
                self._issues[key] = load(path, self.config.newsletter)
            except ContentError:
                return None
        return self._issues[key]
