"""Serve a rendered issue on loopback so the operator can look at it before anything is sent.

The page follows the file: each request renders again when the issue or a template changed, and
the page asks `/stamp` every second and reloads itself when it moved, so saving the Markdown is
enough to see the result. A render error is shown in the page, not thrown at the terminal.
"""

from __future__ import annotations

import html as html_lib
import ipaddress
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import placeholders
from .errors import NewsletterError
from .render import Rendered


def sample_values(base_url: str, slug: str) -> dict[str, str]:
    """Stand-in recipient values for previews and test copies."""
    base = base_url.rstrip("/")
    return {
        **placeholders.SAMPLE_VALUES,
        "unsubscribe_url": f"{base}/unsubscribe/preview-token",
        "preferences_url": f"{base}/preferences/preview-token",
        "view_url": f"{base}/archive/{slug}",
    }


PreviewServer = ThreadingHTTPServer

RELOAD = """<script>(function () {{
  var seen = "{stamp}";
  setInterval(function () {{
    fetch("/stamp", {{cache: "no-store"}}).then(function (r) {{ return r.text(); }})
      .then(function (now) {{ if (now !== seen) location.reload(); }}, function () {{}});
  }}, 1000);
}})();</script>"""


class _Pages:
    """The filled pages of the newest render, made again when `stamp()` changes.

    The first render happens here, so that its error reaches the caller before a server starts.
    """

    def __init__(self, render: Callable[[], Rendered], values: Callable[[Rendered], dict[str, str]],
                 stamp: Callable[[], str]) -> None:
        self._render, self._values, self._stamp = render, values, stamp
        self._lock = threading.Lock()
        self._seen = stamp()  # before the render: a save during it is seen at the next request
        self.first = render()
        self._pages = self._fill(self.first, self._seen)

    def get(self, path: str) -> tuple[str, str] | None:
        with self._lock:
            stamp = self._stamp()
            if stamp != self._seen:
                self._seen, self._pages = stamp, self._build(stamp)
            return {**self._pages, "/stamp": (stamp, "text/plain")}.get(path)

    def _build(self, stamp: str) -> dict[str, tuple[str, str]]:
        try:
            rendered = self._render()
        except NewsletterError as exc:
            page = f"<!doctype html><title>error</title><pre>{html_lib.escape(str(exc))}</pre>"
            page += RELOAD.format(stamp=stamp)
            return {"/": (page, "text/html"), "/text": (str(exc), "text/plain")}
        return self._fill(rendered, stamp)

    def _fill(self, rendered: Rendered, stamp: str) -> dict[str, tuple[str, str]]:
        values, reload = self._values(rendered), RELOAD.format(stamp=stamp)
        page = placeholders.fill(rendered.html, values, html_escape=True).replace("</body>", reload + "</body>", 1)
        return {"/": (page, "text/html"), "/text": (placeholders.fill(rendered.text, values, html_escape=False),
                                                    "text/plain")}


def make_server(render: Callable[[], Rendered], values: Callable[[Rendered], dict[str, str]],
                stamp: Callable[[], str], host: str, port: int) -> tuple[Rendered, PreviewServer]:
    """The first render, and a server whose `/` is the HTML part and `/text` the plain-text part,
    filled with `values`; a render error is raised before the server binds its port."""
    pages = _Pages(render, values, stamp)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if not own_host(self.headers.get("Host", ""), host):
                self.send_error(421, "Misdirected Request: this preview answers only its own address")
                return
            page = pages.get(self.path.split("?")[0])
            if page is None:
                self.send_error(404)
                return
            body = page[0].encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", f"{page[1]}; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return pages.first, ThreadingHTTPServer((host, port), Handler)


def own_host(header: str, host: str) -> bool:
    """Whether a request's Host names this server: an IP address, localhost, or the name it was bound to.

    Any other name may be a DNS rebinding: a page the author visits points its own name at this
    address, and could then read an unpublished draft.
    """
    name = header.rpartition("]")[0].lstrip("[") if header.startswith("[") else header.partition(":")[0]
    name = name.lower().rstrip(".")
    if name and name in ("localhost", host.lower()):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
