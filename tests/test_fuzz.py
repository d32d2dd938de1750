"""Fuzzing what a stranger can send: no 5xx, no traceback, and a rejection changes nothing.

Hypothesis drives the subscribe form, the confirm and unsubscribe links and the webhook through
the real app in-process, and feeds CSV files and front matter to the parsers.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from starlette.testclient import TestClient

from newsletter import Newsletter, content
from newsletter.errors import ContentError, InputError
from newsletter.web import create_app

from .conftest import ROOT, SECRET, write_config
from .test_store import dump
from .webhelpers import WebhookSigner

SAMPLE = ROOT / "subscribers" / "sample.csv"
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=80)
anything = st.text(max_size=200)


@pytest.fixture(scope="module")
def app_and_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    key = WebhookSigner().public_key
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEWSLETTER_SECRET", SECRET)
        path = write_config(folder, backend="smtp", smtp_port=9, base_url="https://testserver")
        path.write_text(path.read_text().replace("[sendgrid]", f'[sendgrid]\nwebhook_public_key = "{key}"'))
        nl = Newsletter.from_config(path)
        nl.subscribers.import_csv(SAMPLE, "weekly")
        client = TestClient(create_app(nl), base_url="https://testserver", raise_server_exceptions=True)
        yield client, nl.config
        nl.close()


@FUZZ
@given(path=st.sampled_from(["/subscribe/weekly", "/subscribe/nope", "/confirm/{t}", "/unsubscribe/{t}"]),
       token=st.text(string.ascii_letters + string.digits + "-_.=%/", max_size=60),
       method=st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE"]),
       form=st.dictionaries(st.sampled_from(["email", "name", "csrf", "List-Unsubscribe", "x"]), anything, max_size=4),
       content_type=st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data",
                                     "multipart/form-data; boundary=x", "text/plain", "", "application/json"]),
       cookie=header_text)
def test_the_form_and_link_endpoints_never_fail(app_and_config, path, token, method, form, content_type, cookie):
    client, cfg = app_and_config
    before = dump(cfg)
    body = "&".join(f"{k}={v}" for k, v in form.items()).encode("utf-8")
    headers = {"Content-Type": content_type, "Cookie": f"newsletter_csrf={cookie}"}
    answer = client.request(method, path.replace("{t}", token), content=body,
                            headers={k: v.encode("latin-1") for k, v in headers.items()})
    assert answer.status_code < 500
    if answer.status_code >= 400:
        assert dump(cfg) == before  # a refusal changes nothing


@FUZZ
@given(body=st.binary(max_size=300) | anything.map(str.encode),
       signature=header_text, timestamp=header_text | st.integers(0, 2**40).map(str))
def test_the_webhook_never_fails(app_and_config, body, signature, timestamp):
    client, cfg = app_and_config
    before = dump(cfg)
    answer = client.post("/webhooks/sendgrid", content=body, headers={
        "X-Twilio-Email-Event-Webhook-Signature": signature.encode("latin-1"),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp.encode("latin-1")})
    assert answer.status_code in (400, 403, 413)
    assert dump(cfg) == before


csv_cells = st.text(st.characters(blacklist_categories=["Cs"]), max_size=30)


@FUZZ
@given(rows=st.lists(st.lists(csv_cells, max_size=5), max_size=8), quote=st.booleans(),
       delimiter=st.sampled_from([",", ";", "\t"]))
def test_csv_import_never_fails_and_strict_changes_nothing(tmp_path_factory, rows, quote, delimiter):
    folder = tmp_path_factory.mktemp("csv")
    cfg_path = write_config(folder)
    lines = [delimiter.join(["email", "name", "status", "note"])]
    lines += [delimiter.join(('"' if quote and i == 1 else "") + c for c in row) for i, row in enumerate(rows)]
    path = folder / "fuzz.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with Newsletter.from_config(cfg_path) as nl:
        nl.subscribers.counts()
        before = dump(nl.config)
        try:
            nl.subscribers.import_csv(path, "weekly", strict=True)
        except InputError as exc:
            assert "\n" not in str(exc)
            assert dump(nl.config) == before
        try:
            report = nl.subscribers.import_csv(path, "weekly")
        except InputError:
            return
        assert report.read == report.added + report.updated + report.present - report.duplicates \
            + report.kept_out + report.rejected + report.suppressed


@FUZZ
@given(front=st.text(max_size=300), body=st.text(max_size=200))
def test_front_matter_never_fails(tmp_path_factory, front, body):
    path = tmp_path_factory.mktemp("fm") / "issue.md"
    path.write_text(f"---\n{front}\n---\n{body}", encoding="utf-8")
    try:
        content.parse(path)
    except ContentError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
