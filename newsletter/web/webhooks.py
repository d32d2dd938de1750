"""Provider webhooks: the body is size-checked and its signature verified before it is read as events."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..app import Newsletter
from ..errors import InputError, UnknownProviderError, WebhookError

log = logging.getLogger("newsletter.web")


class Webhooks:
    def __init__(self, nl: Newsletter, clock: Callable[[], float] = time.time) -> None:
        self.nl, self.clock = nl, clock

    async def receive(self, request: Request) -> Response:
        """POST /webhooks/{provider}: one provider's signed events (SendGrid's at /webhooks/sendgrid)."""
        provider = request.path_params["provider"]
        body = await request.body()  # bounded by the app's BodyLimit: [web] max_webhook_bytes
        try:
            received, counts = await run_in_threadpool(
                lambda: self.nl.webhooks.receive(provider, body, request.headers, now=self.clock()))
        except UnknownProviderError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except WebhookError as exc:
            log.error("%s webhook refused: %s", provider, exc)
            return JSONResponse({"error": "bad or missing signature"}, status_code=403)
        except InputError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"received": received, **counts})
