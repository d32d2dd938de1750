"""What the providers on httpx share: one client made on first use, telling a request that never left
from an answer lost after it did, reading an answer, a dry run's request file, and the size check
before anything is sent."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from ..errors import ProviderError
from .base import Envelope, Preview, Recipient
from .mime import eml_previews
from .retry import MaybeSent, Retry

Answer = tuple[int, Any]  # the HTTP status and the body as JSON (None when it is not JSON)


class LazyClient:
    """A provider's one httpx client, made on first use under a lock: its batches run in several threads."""

    def __init__(self, make: Callable[[], httpx.Client]) -> None:
        self._make = make
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def get(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = self._make()
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


def exchange(provider: str, call: Callable[[], Answer]) -> Answer:
    """`call()`, with httpx's failures as what they mean: a connection never made is a Retry (nothing
    was sent); any other transport failure came after the request went out, so it may have been taken."""
    try:
        return call()
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise Retry(f"connection failed: {exc}") from None
    except httpx.TransportError as exc:
        raise MaybeSent(f"no usable answer from {provider} after the request was sent "
                        f"({type(exc).__name__}: {exc or 'timeout'})") from None


def answer(response: httpx.Response) -> Answer:
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


def previews(envelope: Envelope, recipients: Sequence[Recipient], limit: int, max_batch: int, name: str,
             body: Callable[[list[Recipient]], bytes]) -> list[Preview]:
    """The first `limit` messages as `.eml` files, and the first request exactly as it would be posted."""
    files = eml_previews(envelope, recipients, limit)
    batch = list(recipients[:max_batch])
    if batch:
        files.append(Preview(f"{envelope.rendered.slug}-{name}-request.json", body(batch)))
    return files


def check_size(size: int, limit: int, provider: str) -> None:
    """ProviderError for a message that is over the provider's limit whoever it goes to."""
    if size >= limit:
        raise ProviderError(f"the message is {size / 1e6:.1f} MB; {provider} takes at most {limit / 1e6:.0f} MB: "
                            f"shorten the issue")
