"""SendGrid's error paths, one by one, through an injected HTTP call that answers as python-http-client does.

The fake server (tests/fake_sendgrid.py) covers the same provider over real HTTP; here each answer
and each broken connection is played exactly, with no waiting.
"""

from __future__ import annotations

import http.client
import json
import urllib.error

import pytest
from python_http_client.exceptions import HTTPError

from newsletter.config import SendGridSettings
from newsletter.errors import ProviderAuthError, ProviderError, ProviderRejected, ProviderUnavailable
from newsletter.providers.base import Envelope, Recipient
from newsletter.providers.sendgrid import SendGridProvider
from newsletter.render import Rendered


class Script:
    """The HTTP call, answering from a script: an exception to raise, or a message id to return."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.bodies: list[dict] = []

    def __call__(self, body: str, timeout: float) -> str:
        self.bodies.append(json.loads(body))
        answer = self.answers.pop(0) if self.answers else "msg-ok"
        if isinstance(answer, BaseException):
            raise answer
        return str(answer)

    def emails(self, call: int) -> list[str]:
        return [p["to"][0]["email"] for p in self.bodies[call]["personalizations"]]


def http_error(status: int, errors: list[dict] | None = None, headers: dict | None = None) -> HTTPError:
    body = json.dumps({"errors": errors or []}).encode()
    return HTTPError(status, http.client.responses.get(status, "?"), body, headers or {})


@pytest.fixture
def make():
    waits: list[float] = []

    def provider(*answers: object, retries: int = 3) -> tuple[SendGridProvider, Script]:
        script = Script(*answers)
        settings = SendGridSettings(api_base="http://127.0.0.1:9", max_retries=retries, retry_backoff=0.01)
        return SendGridProvider(settings, "SG.secret-key", sleep=waits.append, post=script), script

    provider.waits = waits  # type: ignore[attr-defined]
    return provider


ENVELOPE = Envelope(Rendered("s", None, "Hi", "", "<p>%%name%%</p>", "%%name%%", 20),  # type: ignore[arg-type]
                    "from@example.com", "", "", "L <l.example.com>", "s")
PEOPLE = [Recipient(i, f"p{i}@example.com", f"P{i}", {"name": f"P{i}"}, f"https://u/{i}") for i in range(4)]


def statuses(results) -> list[tuple[int, str]]:
    return [(r.key, r.status) for r in results]


def test_a_refused_key_stops_and_names_the_variable_never_the_key(make):
    provider, script = make(http_error(401, [{"message": "The provided authorization grant is invalid"}]))
    with pytest.raises(ProviderAuthError) as caught:
        provider.send(ENVELOPE, PEOPLE)
    assert "SENDGRID_API_KEY" in str(caught.value) and "secret-key" not in str(caught.value)
    assert caught.value.partial == [] and len(script.bodies) == 1


def test_rate_limits_and_server_errors_pause_then_retry(make):
    provider, script = make(http_error(429), http_error(503), http_error(408), "msg-1", retries=4)
    results = provider.send(ENVELOPE, PEOPLE)
    assert statuses(results) == [(i, "sent") for i in range(4)] and results[0].message_id == "msg-1"
    assert len(script.bodies) == 4 and len(make.waits) == 3


def test_errors_that_outlast_the_retries_leave_the_batch_pending(make):
    provider, _script = make(http_error(500, [{"message": "boom"}]), http_error(500, [{"message": "boom"}]), retries=2)
    with pytest.raises(ProviderUnavailable, match=r"failed 2 times \(last: 500: boom\).*stays pending") as caught:
        provider.send(ENVELOPE, PEOPLE)
    assert caught.value.partial == []  # nobody is marked: the rows go back to pending


def test_a_connection_never_made_is_retried(make):
    provider, script = make(urllib.error.URLError(ConnectionRefusedError(111, "refused")), "msg-2")
    assert statuses(provider.send(ENVELOPE, PEOPLE)) == [(i, "sent") for i in range(4)]
    assert len(script.bodies) == 2


@pytest.mark.parametrize("failure", [TimeoutError("timed out"), ConnectionResetError(104, "reset"),
                                     http.client.RemoteDisconnected("closed")])
def test_a_request_that_may_have_been_taken_is_unknown_and_never_retried(make, failure):
    provider, script = make(failure)
    results = provider.send(ENVELOPE, PEOPLE)
    assert statuses(results) == [(i, "unknown") for i in range(4)] and len(script.bodies) == 1


def test_a_garbled_answer_is_unknown_and_stops_the_send(make):
    provider, script = make(http.client.BadStatusLine("SSH-2.0"))
    with pytest.raises(ProviderUnavailable, match="not HTTP") as caught:
        provider.send(ENVELOPE, PEOPLE)
    assert statuses(caught.value.partial) == [(i, "unknown") for i in range(4)] and len(script.bodies) == 1


def test_a_request_too_large_is_split_until_it_fits(make):
    provider, script = make(http_error(413), "msg-a", "msg-b")
    results = provider.send(ENVELOPE, PEOPLE)
    assert statuses(results) == [(i, "sent") for i in range(4)]
    assert [script.emails(1), script.emails(2)] == [["p0@example.com", "p1@example.com"],
                                                    ["p2@example.com", "p3@example.com"]]
    assert {r.message_id for r in results} == {"msg-a", "msg-b"}


def test_a_single_recipient_too_large_is_the_message_and_nobody_fails(make):
    provider, _script = make(http_error(413))
    with pytest.raises(ProviderRejected, match="single recipient") as caught:
        provider.send(ENVELOPE, PEOPLE[:1])
    assert caught.value.partial == []


def test_a_bad_request_fails_the_recipients_it_names_and_sends_the_others(make):
    named = [{"field": "personalizations.2.to", "message": "Does not contain a valid address."}]
    provider, script = make(http_error(400, named), "msg-3")
    results = provider.send(ENVELOPE, PEOPLE)
    assert statuses(results) == [(0, "sent"), (1, "sent"), (2, "failed"), (3, "sent")]
    assert "personalizations.2.to" in results[2].error and script.emails(1) == [
        "p0@example.com", "p1@example.com", "p3@example.com"]


def test_a_bad_request_about_the_message_stops_with_sendgrids_words(make):
    provider, _script = make(http_error(400, [{"field": "from.email", "message": "The from address does not match"}]))
    with pytest.raises(ProviderRejected, match=r"from\.email: The from address does not match; nothing was marked"):
        provider.send(ENVELOPE, PEOPLE)


def test_another_client_error_is_one_line_with_sendgrids_reason(make):
    provider, script = make(http_error(404))
    with pytest.raises(ProviderError, match="SendGrid answered 404: Not Found"):
        provider.send(ENVELOPE, PEOPLE)
    assert len(script.bodies) == 1
