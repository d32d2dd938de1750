"""Provider webhooks: the body is size-checked and its signature verified before it is read as events."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..app import Newsletter
from ..errors import InputError, WebhookError

log = logging.getLogger("newsletter.web")
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


class Webhooks:
    def __init__(self, nl: Newsletter, clock: Callable[[], float] = time.time) -> None:
        self.nl, self.clock = nl, clock

    async def sendgrid(self, request: Request) -> Response:
        body = await request.body()  # bounded by the app's BodyLimit: [web] max_webhook_bytes
        signature, timestamp = request.headers.get(SIGNATURE_HEADER, ""), request.headers.get(TIMESTAMP_HEADER, "")
        try:
            received, counts = await run_in_threadpool(
                lambda: self.nl.receive_sendgrid_events(body, signature, timestamp, now=self.clock()))
        except WebhookError as exc:
            log.error("SendGrid webhook refused: %s", exc)
            return JSONResponse({"error": "bad or missing signature"}, status_code=403)
        except InputError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"received": received, **counts})
