"""The archive of sent issues: per list or all, each issue's web version, and Atom feeds."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..app import ArchivedIssue, Newsletter
from .pages import Pages


class Archive:
    def __init__(self, nl: Newsletter, pages: Pages) -> None:
        self.nl, self.pages = nl, pages
        self.base_url = nl.config.require_base_url()

    async def index(self, request: Request) -> Response:
        """/archive, or /archive/{list}; /archive/{slug} is an issue (sent mail links there)."""
        name = request.path_params.get("list")
        if name is not None and name not in self.nl.config.lists:
            return await self._issue(request, str(name), None)
        issues = await run_in_threadpool(self.nl.issues.archive, name)
        lists = [self.nl.config.lists[name]] if name else list(self.nl.config.lists.values())
        return self.pages.page(request, "archive.html", {"list": lists[0] if name else None, "lists": lists, "issues": [
            {"slug": i.slug, "subject": i.subject, "date": i.date, "preheader": i.preheader,
             "href": f"/archive/{name}/{i.slug}" if name else f"/archive/{i.slug}"} for i in issues]})

    async def issue(self, request: Request) -> Response:
        name = request.path_params["list"]
        if name not in self.nl.config.lists:
            return self.pages.error(request, 404, "There is no such list.")
        return await self._issue(request, request.path_params["slug"], str(name))

    async def _issue(self, request: Request, slug: str, list_name: str | None) -> Response:
        page = await run_in_threadpool(self.nl.issues.web_version, slug, list_name)
        if page is None:
            return self.pages.error(request, 404, "There is no such issue in the archive.")
        return HTMLResponse(page)

    async def feed(self, request: Request) -> Response:
        """An Atom feed of every issue sent (to the list the path names), each article in full."""
        name = request.path_params.get("list")
        if name is not None and name not in self.nl.config.lists:
            return self.pages.error(request, 404, "There is no such list.")
        issues = await run_in_threadpool(self.nl.issues.archive, name)
        pages = [await run_in_threadpool(self.nl.issues.article, i) for i in issues]
        return Response(self._atom(issues, pages, name), media_type="application/atom+xml")

    def _atom(self, issues: list[ArchivedIssue], pages: list[str | None], list_name: str | None) -> bytes:
        title, base = self.nl.config.newsletter.name, self.base_url
        home = f"{base}/archive/{list_name}" if list_name else f"{base}/archive"
        root = ET.Element("feed", xmlns="http://www.w3.org/2005/Atom")
        ET.SubElement(root, "title").text = title
        ET.SubElement(root, "id").text = home
        ET.SubElement(root, "link", href=f"{home}/feed.xml", rel="self")
        ET.SubElement(root, "link", href=home)
        newest = max((i.sent_at for i in issues), default=dt.datetime(2000, 1, 1))
        ET.SubElement(root, "updated").text = _atom_time(newest)
        ET.SubElement(ET.SubElement(root, "author"), "name").text = title
        for issue, page in zip(issues, pages, strict=True):
            link = f"{home}/{issue.slug}"
            entry = ET.SubElement(root, "entry")
            ET.SubElement(entry, "title").text = issue.subject
            ET.SubElement(entry, "id").text = link
            ET.SubElement(entry, "link", href=link)
            for stamp in ("published", "updated"):  # both the time its send started
                ET.SubElement(entry, stamp).text = _atom_time(issue.sent_at)
            ET.SubElement(entry, "summary").text = issue.preheader or issue.subject
            ET.SubElement(entry, "content", type="html").text = page or ""
        return b'<?xml version="1.0" encoding="utf-8"?>\n' + bytes(ET.tostring(root, encoding="utf-8"))


def _atom_time(when: dt.datetime) -> str:
    """A stored time (UTC, without its zone) as Atom writes one."""
    return f"{when:%Y-%m-%dT%H:%M:%S}Z"
