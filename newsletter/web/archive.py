"""The archive of sent issues: a list, each issue's web version, and an Atom feed."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..app import Newsletter
from .pages import Pages


class Archive:
    def __init__(self, nl: Newsletter, pages: Pages) -> None:
        self.nl, self.pages = nl, pages
        self.base_url = nl.config.require_base_url()

    async def index(self, request: Request) -> Response:
        issues = await run_in_threadpool(self.nl.archive)
        return self.pages.page(request, "archive.html", {"issues": [
            {"slug": i.slug, "subject": i.subject, "date": i.date, "preheader": i.preheader} for i in issues]})

    async def issue(self, request: Request) -> Response:
        page = await run_in_threadpool(self.nl.web_version, request.path_params["slug"])
        if page is None:
            return self.pages.error(request, 404, "There is no such issue in the archive.")
        return HTMLResponse(page)

    async def feed(self, request: Request) -> Response:
        issues = await run_in_threadpool(self.nl.archive)
        name, base = self.nl.config.newsletter.name, self.base_url
        root = ET.Element("feed", xmlns="http://www.w3.org/2005/Atom")
        ET.SubElement(root, "title").text = name
        ET.SubElement(root, "id").text = f"{base}/archive"
        ET.SubElement(root, "link", href=f"{base}/archive/feed.xml", rel="self")
        ET.SubElement(root, "link", href=f"{base}/archive")
        newest = issues[0].date if issues else dt.date(2000, 1, 1)
        ET.SubElement(root, "updated").text = f"{newest.isoformat()}T00:00:00Z"
        ET.SubElement(ET.SubElement(root, "author"), "name").text = name
        for issue in issues:
            entry = ET.SubElement(root, "entry")
            ET.SubElement(entry, "title").text = issue.subject
            ET.SubElement(entry, "id").text = f"{base}/archive/{issue.slug}"
            ET.SubElement(entry, "link", href=f"{base}/archive/{issue.slug}")
            ET.SubElement(entry, "updated").text = f"{issue.date.isoformat()}T00:00:00Z"
            ET.SubElement(entry, "summary").text = issue.preheader or issue.subject
        body = b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8")
        return Response(body, media_type="application/atom+xml")
