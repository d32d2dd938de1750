"""HTML pages from the Jinja2 templates in `templates/web/` (the project's, else the package's), with the CSRF
cookie when a form needs it."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from ..app import ListSettings, Newsletter
from .security import CSRF_COOKIE


class Pages:
    def __init__(self, nl: Newsletter) -> None:
        self.nl = nl
        self.templates = Jinja2Templates(env=nl.issues.web_templates())
        self.secure_cookie = nl.config.require_base_url().startswith("https://")

    def page(self, request: Request, name: str, context: dict[str, Any], status: int = 200,
             csrf: str | None = None) -> Response:
        response = self.templates.TemplateResponse(
            request, name, {"newsletter": self.nl.config.newsletter, "csrf": csrf or "",
                            "proof_of_work": self.nl.config.web.proof_of_work, **context},
            status_code=status)
        if csrf:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/",
                                secure=self.secure_cookie)
        return response

    def error(self, request: Request, status: int, message: str, list_: ListSettings | None = None,
              action: tuple[str, str] | None = None) -> Response:
        """A page saying what went wrong, with what to do next (`action`: its label and address)."""
        return self.page(request, "message.html", {"title": "Something is wrong", "message": message, "list": list_,
                                                   "action": action}, status)

    def message(self, request: Request, title: str, message: str, list_: ListSettings | None = None) -> Response:
        """An end page: it leads on to the list's archive (or the whole archive) and the operator's site."""
        return self.page(request, "message.html", {"title": title, "message": message, "list": list_})
