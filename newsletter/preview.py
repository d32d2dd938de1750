"""Serve a rendered issue on loopback so the operator can look at it before anything is sent."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import placeholders
from .render import Rendered


def sample_values(base_url: str, slug: str) -> dict[str, str]:
    """Stand-in recipient values for previews and test copies."""
    base = base_url.rstrip("/")
    return {
        **placeholders.SAMPLE_VALUES,
        "unsubscribe_url": f"{base}/unsubscribe/preview-token",
        "view_url": f"{base}/archive/{slug}",
    }


PreviewServer = ThreadingHTTPServer


def make_server(rendered: Rendered, values: dict[str, str], host: str, port: int) -> PreviewServer:
    """A server whose `/` is the HTML part and `/text` the plain-text part, both filled with `values`."""
    pages = {
        "/": (placeholders.fill(rendered.html, values, html_escape=True), "text/html"),
        "/text": (placeholders.fill(rendered.text, values, html_escape=False), "text/plain"),
    }

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            page = pages.get(self.path.split("?")[0])
            if page is None:
                self.send_error(404)
                return
            body = page[0].encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", f"{page[1]}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    return ThreadingHTTPServer((host, port), Handler)
