"""The optional proof-of-work check of the subscribe form ([web] proof_of_work), with ALTCHA.

The browser fetches a challenge signed with a key derived from the newsletter's secret, finds the
number whose SHA-256 it is (ALTCHA's widget, served from this server: no third party sees the
visitor), and sends it with the form. The server checks the signature, the expiry and that the
answer was not used before. It makes a flood of requests cost the sender; the confirmation mail
stays the real defence.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from importlib import resources
from types import MappingProxyType

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

LIFETIME = 600  # seconds a challenge may be answered in
# The widget's two builds: files apart for this server's pages (a strict CSP), whole for another site's.
_STATIC = MappingProxyType({
    "altcha.js": ("altcha.js", "text/javascript"), "altcha-worker.js": ("worker.js", "text/javascript"),
    "altcha.css": ("altcha.css", "text/css"), "altcha-bundle.js": ("altcha-bundle.js", "text/javascript")})


class ProofOfWork:
    def __init__(self, secret: bytes, difficulty: int, origins: tuple[str, ...],
                 clock: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(secret, b"altcha challenge", hashlib.sha256).hexdigest()
        self.difficulty, self.origins, self.clock = difficulty, origins, clock
        self._used: dict[str, float] = {}  # answered challenges' signatures, until they expire
        self._lock = threading.Lock()

    def challenge(self) -> dict[str, object]:
        from altcha.v1 import ChallengeOptions, create_challenge

        expires = dt.datetime.fromtimestamp(self.clock() + LIFETIME, dt.UTC)
        made = create_challenge(ChallengeOptions(hmac_key=self._key, max_number=self.difficulty, expires=expires))
        return dict(made.to_dict())

    def solved(self, payload: str) -> bool:
        """Whether `payload` (the widget's form field) answers a challenge of ours, unexpired, for the first time."""
        import base64
        import binascii
        import json

        from altcha.v1 import verify_solution

        if not payload or len(payload) > 2000:
            return False
        ok, _why = verify_solution(payload, self._key, check_expires=True)
        if not ok:
            return False
        try:
            signature = str(json.loads(base64.b64decode(payload))["signature"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return False
        now = self.clock()
        with self._lock:
            for stale in [s for s, until in self._used.items() if until < now]:
                del self._used[stale]
            if signature in self._used:
                return False  # an answer sent again: one answer, one form
            self._used[signature] = now + LIFETIME
        return True

    async def serve_challenge(self, request: Request) -> Response:
        """A new challenge, fetched by the widget (from another site's page too, for an allowed origin)."""
        headers = {"Cache-Control": "no-store"}
        origin = request.headers.get("origin", "")
        if origin in self.origins:
            headers |= {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return JSONResponse(self.challenge(), headers=headers)


async def static(request: Request) -> Response:
    """The widget's files, as published by ALTCHA (the `altcha` npm package's external build, MIT)."""
    found = _STATIC.get(request.path_params["name"])
    if found is None:
        return Response("not found\n", 404, media_type="text/plain")
    body = resources.files("newsletter").joinpath("data", "altcha", found[0]).read_bytes()
    return Response(body, media_type=found[1], headers={"Cache-Control": "public, max-age=86400",
                                                        "Access-Control-Allow-Origin": "*"})
