import contextlib
import datetime as dt
import email
import email.policy
import re
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from newsletter import Newsletter, config as config_mod, consent, tokens
from newsletter.cli import cli
from newsletter.errors import ConfigError
from newsletter.store import Store
from newsletter.web import create_app
from newsletter.web.security import mask

from . import smtp_server
from .conftest import ROOT, SECRET, write_config
from .test_store import dump
from .webhelpers import LiveServer, WebhookSigner, event_batch

SAMPLE = ROOT / "subscribers" / "sample.csv"


@pytest.fixture
def signer():
    return WebhookSigner()


@pytest.fixture
def web_config(tmp_path, monkeypatch, smtp, signer):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = write_config(tmp_path, backend="smtp", smtp_port=smtp[0].port, base_url="https://testserver")
    text = path.read_text().replace("[sendgrid]", f'[sendgrid]\nwebhook_public_key = "{signer.public_key}"\n'
                                                  f"webhook_tolerance = 300")
    text = text.replace("[newsletter]\n", '[newsletter]\nwebsite = "https://example.com/"\n', 1)
    path.write_text(text + '\n[web]\nrate_limit_per_ip = 5\nrate_limit_per_email = 2\n'
                           'allowed_origins = ["https://blog.example.org"]\n')
    runner = CliRunner()
    imported = runner.invoke(cli, ["--config", str(path), "subscribers", "import", str(SAMPLE), "--list", "weekly"])
    assert imported.exit_code == 0
    return config_mod.load(path)


@pytest.fixture
def clock():
    return {"now": time.time()}


@pytest.fixture
def client(web_config, clock):
    with TestClient(create_app(Newsletter(web_config), clock=lambda: clock["now"]), base_url="https://testserver") as c:
        yield c


def status(cfg, address, list_name="weekly"):
    with Store(cfg) as store:
        found = store.find(address)
        return found.memberships.get(list_name, (None,))[0] if found else None


def csrf(page_text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page_text).group(1)


def subscribe(client, address, name="", list_name="weekly"):
    page = client.get(f"/subscribe/{list_name}")
    return client.post(f"/subscribe/{list_name}", data={"email": address, "name": name, "csrf": csrf(page.text)})


def confirmation_link(inbox, address) -> str:
    for _from, rcpt, msg in reversed(inbox.messages):
        if rcpt == [address]:
            text = msg.get_body(("plain",)).get_content()
            return re.search(r"https://testserver(/confirm/\S+)", text).group(1)
    raise AssertionError(f"no confirmation mail to {address}")


def test_pages_carry_security_headers(client):
    page = client.get("/subscribe/weekly")
    assert page.status_code == 200
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert '<meta name="viewport"' in page.text and "Test Weekly" in page.text


def test_subscribe_then_confirm(client, web_config, smtp):
    _controller, inbox = smtp
    answer = subscribe(client, "new@example.com", "New <b>Reader</b>")
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert status(web_config, "new@example.com") == "unconfirmed"
    _f, rcpt, msg = inbox.messages[-1]
    assert rcpt == ["new@example.com"] and msg["Subject"] == "Please confirm: Test Weekly"
    assert msg["List-Unsubscribe"] is None  # a confirmation request is not list mail
    html = msg.get_body(("html",)).get_content()
    assert "New &lt;b&gt;Reader&lt;/b&gt;" in html  # the name is escaped in the mail
    link = confirmation_link(inbox, "new@example.com")
    page = client.get(link)
    assert page.status_code == 200 and "Confirm my subscription" in page.text
    assert status(web_config, "new@example.com") == "unconfirmed"  # GET changes nothing
    done = client.post(link, data={"csrf": csrf(page.text)})
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert status(web_config, "new@example.com") == "active"
    again = client.post(link, data={"csrf": csrf(page.text)})
    assert again.status_code == 200 and status(web_config, "new@example.com") == "active"


def test_a_non_ascii_address_on_an_smtp_server_without_smtputf8_gets_the_same_answer(client, web_config, smtp):
    _controller, inbox = smtp
    answer = subscribe(client, "jürgen@example.com", "Jürgen")
    assert answer.status_code == 200 and "Check your inbox" in answer.text  # not a 500
    assert status(web_config, "jürgen@example.com") == "unconfirmed"
    assert inbox.messages == []  # the server cannot take the address: no mail, and no crash


def test_subscribe_answer_does_not_reveal_membership(client, web_config, smtp):
    _controller, inbox = smtp
    with Store(web_config) as store:
        store.suppress("suppressed@example.com", "complaint")
        store.add("complained@example.com", "weekly")
        store.change(store.get("complained@example.com").id, "weekly", consent.COMPLAINT, "test")
        store.remove("grace@example.org")  # erased: only a hash is left
    answers = {a: subscribe(client, a) for a in ("ada@example.com", "fresh@example.com", "suppressed@example.com",
                                                 "complained@example.com", "grace@example.org")}
    texts = {a: re.sub(re.escape(a), "ADDRESS", r.text) for a, r in answers.items()}
    assert len(set(texts.values())) == 1 and all(r.status_code == 200 for r in answers.values())
    assert [rcpt for _f, rcpt, _m in inbox.messages] == [["fresh@example.com"]]
    assert status(web_config, "ada@example.com") == "active"
    assert status(web_config, "complained@example.com") == "complained"
    with Store(web_config) as store:
        assert store.find("grace@example.org") is None  # the form does not store an erased address again
        assert store.find("suppressed@example.com") is None


def test_a_leaver_must_confirm_again(client, web_config, smtp):
    with Store(web_config) as store:
        store.unsubscribe("ada@example.com", "weekly")
    subscribe(client, "ada@example.com")
    assert status(web_config, "ada@example.com") == "unconfirmed"
    link = confirmation_link(smtp[1], "ada@example.com")
    page = client.get(link)
    client.post(link, data={"csrf": csrf(page.text)})
    assert status(web_config, "ada@example.com") == "active"


def test_subscribe_rejections(client, web_config):
    before = dump(web_config)
    assert client.get("/subscribe/nope").status_code == 404
    no_csrf = client.post("/subscribe/weekly", data={"email": "x@example.com"})
    assert no_csrf.status_code == 403
    page = client.get("/subscribe/weekly")
    forged = client.post("/subscribe/weekly", data={"email": "x@example.com", "csrf": "forged"})
    assert forged.status_code == 403
    bad = client.post("/subscribe/weekly", data={"email": "not an <address>", "csrf": csrf(page.text)})
    assert bad.status_code == 400 and "does not look like an email address" in bad.text
    assert "not an &lt;address&gt;" in bad.text
    assert dump(web_config) == before


def test_rate_limits_per_client_and_per_address(client, web_config, smtp):
    _controller, inbox = smtp
    for _ in range(3):
        assert subscribe(client, "target@example.com").status_code == 200
    assert len(inbox.messages) == 2  # rate_limit_per_email = 2: no third mail, same answer
    assert subscribe(client, "other1@example.com").status_code == 200
    assert subscribe(client, "other2@example.com").status_code == 200  # the fifth request is the last allowed
    limited = subscribe(client, "other3@example.com")
    assert limited.status_code == 429  # rate_limit_per_ip = 5
    assert status(web_config, "other3@example.com") is None


def test_confirm_rejections(client, web_config, clock):
    assert client.get("/confirm/garbage").status_code == 400
    with Store(web_config) as store:
        sid = store.request_subscription("late@example.com", "weekly")[0]
    token = tokens.make_confirm(SECRET.encode(), sid, "weekly", ttl=3600, now=clock["now"])
    clock["now"] += 3601
    expired = client.get(f"/confirm/{token}")
    assert expired.status_code == 400 and "expired" in expired.text
    clock["now"] -= 3601
    page = client.get(f"/confirm/{token}")
    assert client.post(f"/confirm/{token}", data={"csrf": "nope"}).status_code == 403
    assert status(web_config, "late@example.com") == "unconfirmed"
    other_list = tokens.make_confirm(SECRET.encode(), sid, "monthly", ttl=3600, now=clock["now"])
    assert client.get(f"/confirm/{other_list}").status_code == 404
    assert csrf(page.text)


def unsubscribe_token(cfg, address, list_name="weekly", secret=SECRET):
    with Store(cfg) as store:
        sid = store.get(address).id
    return tokens.unsubscribe_signer(secret.encode()).make(sid, list_name, "2026-12-01")


def test_unsubscribe_page_then_one_click(client, web_config):
    token = unsubscribe_token(web_config, "grace@example.org")
    page = client.get(f"/unsubscribe/{token}")
    assert page.status_code == 200
    assert "Test Weekly" in page.text and mask("grace@example.org") in page.text
    assert "grace@example.org" not in page.text
    assert status(web_config, "grace@example.org") == "active"  # GET never unsubscribes
    fresh = TestClient(client.app, base_url="https://testserver")  # a mail client: no cookies
    answer = fresh.post(f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click",
                        headers={"Content-Type": "application/x-www-form-urlencoded"}, follow_redirects=False)
    assert answer.status_code == 200
    with Store(web_config) as store:
        state, _at, source = store.get("grace@example.org").memberships["weekly"]
    assert (state, source) == ("unsubscribed", "one-click")
    again = fresh.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert again.status_code == 200 and status(web_config, "grace@example.org") == "unsubscribed"


def test_unsubscribe_button(client, web_config):
    token = unsubscribe_token(web_config, "alan@example.com")
    page = client.get(f"/unsubscribe/{token}")
    done = client.post(f"/unsubscribe/{token}", data={"csrf": csrf(page.text)})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert status(web_config, "alan@example.com") == "unsubscribed"


def test_unsubscribe_rejections_change_nothing(client, web_config):
    before = dump(web_config)
    token = unsubscribe_token(web_config, "ada@example.com")
    subscriber, context, signature = token.split(".")
    altered = f"{int(subscriber) + 1}.{context}.{signature}"
    foreign = unsubscribe_token(web_config, "ada@example.com", secret="another-secret")
    unknown_list = unsubscribe_token(web_config, "ada@example.com", list_name="monthly")
    gone = tokens.unsubscribe_signer(SECRET.encode()).make(999_999, "weekly", "")  # no such subscriber
    one_click = {"List-Unsubscribe": "One-Click"}
    assert client.post(f"/unsubscribe/{altered}", data=one_click).status_code == 400
    assert client.post(f"/unsubscribe/{foreign}", data=one_click).status_code == 400
    assert client.post("/unsubscribe/not-a-token", data=one_click).status_code == 400
    assert client.post(f"/unsubscribe/{unknown_list}", data=one_click).status_code == 404
    assert client.post(f"/unsubscribe/{gone}", data=one_click).status_code == 404
    assert client.post(f"/unsubscribe/{token}", data={"csrf": "forged"}).status_code == 403
    assert dump(web_config) == before


def ids(cfg) -> dict[str, int]:
    with Store(cfg) as store:
        return {line.split(",")[0]: store.get(line.split(",")[0]).id for line in SAMPLE.read_text().splitlines()[1:]}


def test_webhook_events_are_verified_recorded_and_acted_on(client, web_config, signer):
    body = event_batch("2026-12-01", ids(web_config), int(time.time()))
    answer = client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body))
    assert answer.status_code == 200, answer.text
    counts = answer.json()
    assert counts["received"] == 9  # the unknown type is left out
    with Store(web_config) as store:
        assert store.get("grace@example.org").memberships["weekly"][0] == "bounced"
        assert store.get("grace@example.org").suppressed.startswith("bounced: 550")
        assert store.get("alan@example.com").memberships["weekly"][0] == "active"  # blocked: recorded only
        assert not store.get("alan@example.com").suppressed
        assert store.get("katherine@example.org").memberships["weekly"][0] == "complained"
        assert store.get("katherine@example.org").suppressed
        assert store.get("edsger@example.com").memberships["weekly"][0] == "unsubscribed"
    again = client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body))
    assert again.status_code == 200 and again.json()["duplicate"] == 9
    issue = str(ROOT / "issues" / "2026-12-01.md")
    result = CliRunner().invoke(cli, ["--config", str(web_config.path), "status", issue, "--list", "weekly"])
    # The issue was never sent, yet its events are counted once each.
    assert "has not been sent" in result.output
    from newsletter import events

    with Store(web_config) as store:
        tracked = events.issue_counts(store, "2026-12-01")
    assert (tracked["delivered"], tracked["opened"], tracked["clicked"], tracked["bounced"], tracked["complained"],
            tracked["blocked"], tracked["unsubscribed"], tracked["deferred"]) == (1, 1, 1, 1, 1, 1, 1, 1)


def test_webhook_rejects_tampering_and_old_timestamps(client, web_config, signer):
    before = dump(web_config)
    body = event_batch("2026-12-01", ids(web_config), int(time.time()))
    headers = signer.headers(body)
    tampered = body.replace(b'"bounce"', b'"bounc3"', 1)
    assert client.post("/webhooks/sendgrid", content=tampered, headers=headers).status_code == 403
    one_byte = bytearray(body)
    one_byte[10] ^= 1
    assert client.post("/webhooks/sendgrid", content=bytes(one_byte), headers=headers).status_code == 403
    old = signer.headers(body, timestamp=int(time.time()) - 3600)
    assert client.post("/webhooks/sendgrid", content=body, headers=old).status_code == 403
    assert client.post("/webhooks/sendgrid", content=body).status_code == 403
    other = WebhookSigner()
    assert client.post("/webhooks/sendgrid", content=body, headers=other.headers(body)).status_code == 403
    huge = b"[" + b" " * (6 * 1024 * 1024) + b"]"
    assert client.post("/webhooks/sendgrid", content=huge, headers=signer.headers(huge)).status_code == 413
    assert dump(web_config) == before


def test_archive_lists_only_sent_issues_without_personal_data(client, web_config, smtp, tmp_path):
    issue = tmp_path / "issues" / "2026-12-01.md"
    issue.write_text((ROOT / "issues" / "2026-12-01.md").read_text())
    assert "No issue has been sent yet" in client.get("/archive").text
    assert client.get("/archive/2026-12-01").status_code == 404  # drafts are not published
    runner = CliRunner()
    sent = runner.invoke(cli, ["--config", str(web_config.path), "send", str(issue), "--list", "weekly", "--yes"])
    assert sent.exit_code == 0, sent.output
    listing = client.get("/archive")
    assert "The Pipeline Weekly #48" in listing.text and 'href="/archive/2026-12-01"' in listing.text
    page = client.get("/archive/2026-12-01")  # the view_url sent mail carries
    assert page.status_code == 200 and "Hello there," in page.text  # neutral: the placeholder's default
    assert "%%" not in page.text
    assert "your address" not in page.text and "/unsubscribe/" not in page.text
    assert 'href="https://testserver/subscribe/weekly"' in page.text  # the web version invites to subscribe
    assert not any(line.split(",")[0] in page.text for line in SAMPLE.read_text().splitlines()[1:])
    assert client.get("/archive/weekly/2026-12-01").text == page.text
    # Each list has its own archive: an issue sent only to weekly is not on daily's.
    assert "The Pipeline Weekly #48" in client.get("/archive/weekly").text
    daily = client.get("/archive/daily")
    assert "No issue has been sent yet" in daily.text and 'href="/subscribe/daily"' in daily.text
    assert client.get("/archive/daily/2026-12-01").status_code == 404
    feed = ET.fromstring(client.get("/archive/feed.xml").content)  # noqa: S314 - our own feed
    ns = {"a": "http://www.w3.org/2005/Atom"}
    entries = feed.findall("a:entry", ns)
    assert len(entries) == 1
    assert entries[0].find("a:link", ns).get("href") == "https://testserver/archive/2026-12-01"
    full = entries[0].find("a:content", ns)
    assert full.get("type") == "html" and "Hello there," in full.text  # the whole issue, not a summary
    # The article, not the email document: no doctype, head, styles, Outlook comments or preheader.
    assert "<h2" in full.text and "Exactly-once is a ledger" in full.text and "%%" not in full.text
    for email_only in ("<!doctype", "<html", "<style", "<!--[if", "mso-", "Why at-least-once", "Subscribe to get it"):
        assert email_only not in full.text, email_only
    assert len(full.text.encode()) < 12_000
    with Newsletter.from_config(web_config.path) as nl, nl.store.engine.connect() as conn:
        started = conn.exec_driver_sql("SELECT min(started_at) FROM sends").scalar()
    started = dt.datetime.fromisoformat(str(started))
    assert entries[0].find("a:updated", ns).text == f"{started:%Y-%m-%dT%H:%M:%S}Z"
    assert entries[0].find("a:published", ns).text == f"{started:%Y-%m-%dT%H:%M:%S}Z"
    weekly = ET.fromstring(client.get("/archive/weekly/feed.xml").content)  # noqa: S314 - our own feed
    assert weekly.find("a:entry/a:link", ns).get("href") == "https://testserver/archive/weekly/2026-12-01"
    assert not ET.fromstring(client.get("/archive/daily/feed.xml").content).findall("a:entry", ns)  # noqa: S314


def test_one_click_from_a_dry_run_eml_on_a_real_server(tmp_path, monkeypatch, smtp):
    """The List-Unsubscribe URL a message carries works against `newsletter serve`'s app."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    port = smtp_server.free_port()
    path = write_config(tmp_path, backend="smtp", smtp_port=smtp[0].port, base_url=f"http://127.0.0.1:{port}")
    runner = CliRunner()
    run = lambda *a: runner.invoke(cli, ["--config", str(path), *map(str, a)])  # noqa: E731
    run("subscribers", "import", SAMPLE, "--list", "weekly")
    issue = ROOT / "issues" / "2026-12-01.md"
    assert run("send", issue, "--list", "weekly", "--dry-run", "--out", tmp_path / "dry").exit_code == 0
    first = sorted((tmp_path / "dry").glob("*.eml"))[0]
    msg = email.message_from_bytes(first.read_bytes(), policy=email.policy.default)
    url = msg["List-Unsubscribe"].strip("<>")
    address = msg["To"].addresses[0].addr_spec
    cfg = config_mod.load(path)
    with LiveServer(create_app(Newsletter(cfg)), port=port):
        request = urllib.request.Request(url, data=b"List-Unsubscribe=One-Click", method="POST",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        try:
            urllib.request.urlopen(urllib.request.Request(url + "x", data=b"List-Unsubscribe=One-Click"), timeout=10)
            raise AssertionError("an altered token was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 400
    assert status(cfg, address) == "unsubscribed"
    sent = run("send", issue, "--list", "weekly", "--yes")
    assert sent.exit_code == 0, sent.output
    assert address not in [r[0] for _f, r, _m in smtp[1].messages]
    assert len(smtp[1].messages) == 11


# -- hostile input (each of these got through once) -------------------------------------------------


def test_head_with_a_one_click_body_changes_nothing(client, web_config):
    token = unsubscribe_token(web_config, "grace@example.org")
    answer = client.request("HEAD", f"/unsubscribe/{token}", content=b"List-Unsubscribe=One-Click",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 200
    assert status(web_config, "grace@example.org") == "active"  # only POST changes state


def test_no_redirect_takes_its_host_from_the_request(client):
    answer = client.get("/archive/", headers={"Host": "evil.example.net"}, follow_redirects=False)
    location = answer.headers.get("location", "")
    assert "evil.example.net" not in location
    assert answer.status_code in (200, 404) or location.startswith(("/", "https://testserver"))


@pytest.mark.parametrize("stamp", ["²", "¹²³", "12 3", "-5", "9" * 40])
def test_a_strange_webhook_timestamp_is_refused_not_a_500(client, signer, stamp):
    body = b"[]"
    headers: dict[str, str | bytes] = dict(signer.headers(body))
    headers["X-Twilio-Email-Event-Webhook-Timestamp"] = stamp.encode("latin-1")  # as it comes off the wire
    answer = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert answer.status_code == 403


def test_bodies_over_the_limit_are_refused_before_anything_reads_them(client, web_config, signer):
    page = client.get("/subscribe/weekly")
    big = {"csrf": csrf(page.text), "email": "big@example.com", "name": "x" * 70_000}
    assert client.post("/subscribe/weekly", data=big).status_code == 413  # declared length over 64 KB
    assert status(web_config, "big@example.com") is None

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(10):
            yield b"x" * 1024 * 1024

    answer = client.post("/webhooks/sendgrid", content=chunks(), headers=signer.headers(b"[]"))
    assert answer.status_code == 413
    assert client.get("/archive").status_code == 200  # and the app goes on serving


@pytest.mark.slow
def test_a_300_mb_chunked_body_does_not_grow_the_server(web_config, tmp_path):
    import http.client
    import os
    import subprocess
    import sys

    from .smtp_server import free_port

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "newsletter.cli", "--config", str(web_config.path), "serve",
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                probe.request("GET", "/archive")
                assert probe.getresponse().status == 200
                break
            except OSError:
                assert time.monotonic() < deadline, server.stderr.read() if server.poll() is not None else "no start"
                time.sleep(0.2)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.putrequest("POST", "/webhooks/sendgrid")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.putheader("Content-Type", "application/json")
        connection.endheaders()
        chunk = b"x" * (1024 * 1024)
        sent = 0
        try:
            for _ in range(300):  # 300 MB, one MB at a time: never held whole, here or there
                connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += 1
            connection.send(b"0\r\n\r\n")
        except OSError:
            pass  # the server answered 413 and closed while we were still sending
        try:
            status_code = connection.getresponse().status
        except (OSError, http.client.HTTPException):
            status_code = 413 if sent < 300 else 0
        assert status_code == 413
        status_lines = Path(f"/proc/{server.pid}/status").read_text().splitlines()
        peak_kb = next(int(line.split()[1]) for line in status_lines if line.startswith("VmHWM:"))
        assert peak_kb < 100 * 1024, f"server peak RSS {peak_kb // 1024} MB"
        probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        probe.request("GET", "/archive")
        assert probe.getresponse().status == 200
    finally:
        server.terminate()
        server.wait(20)


def test_an_allowed_origin_posts_without_the_cookie_others_need_it_and_robots_fill_the_honeypot(
        client, web_config, smtp):
    inbox = smtp[1]
    before = len(inbox.messages)
    other = client.post("/subscribe/weekly", data={"email": "elsewhere@example.com"},
                        headers={"Origin": "https://evil.example.net"})
    assert other.status_code == 403
    embedded = client.post("/subscribe/weekly", data={"email": "blog.reader@example.com"},
                           headers={"Origin": "https://blog.example.org"})
    assert embedded.status_code == 200 and "Check your inbox" in embedded.text
    assert len(inbox.messages) == before + 1 and inbox.messages[-1][1] == ["blog.reader@example.com"]
    robot = client.post("/subscribe/weekly", data={"email": "robot@example.com", "website": "http://spam.example"},
                        headers={"Origin": "https://blog.example.org"})
    assert robot.status_code == 200 and "Check your inbox" in robot.text  # it learns nothing
    assert len(inbox.messages) == before + 1
    with Store(web_config) as store:
        assert store.find("robot@example.com") is None
        assert store.find("blog.reader@example.com").memberships["weekly"][0] == "unconfirmed"


def test_tokens_never_reach_the_access_log():
    import logging

    from newsletter.web.security import RedactTokens

    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("1.2.3.4:5", "POST", "/unsubscribe/12-ab.cd.ef?x=1", "1.1", 200), None)
    assert RedactTokens().filter(record)
    assert record.getMessage() == '1.2.3.4:5 - "POST /unsubscribe/[token]?x=1 HTTP/1.1" 200'


def test_healthz(client):
    answer = client.get("/healthz")
    assert answer.status_code == 200 and answer.text == "ok\n"


def test_allowed_origins_must_be_origins(tmp_path):
    path = write_config(tmp_path, extra='\n[web]\nallowed_origins = ["https://blog.example.org/signup"]\n')
    with pytest.raises(ConfigError, match=r"allowed_origins: 'https://blog.example.org/signup' is not an origin"):
        config_mod.load(path)


@pytest.mark.slow
def test_serve_believes_forwarded_addresses_from_trusted_proxies_and_logs_no_tokens(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys
    import urllib.parse

    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    port = smtp_server.free_port()
    path = write_config(tmp_path, base_url=f"http://127.0.0.1:{port}",
                        extra='\n[web]\nrate_limit_per_ip = 1\ntrusted_proxies = ["127.0.0.1"]\n'
                              'allowed_origins = ["https://blog.example.org"]\n')
    server = subprocess.Popen([sys.executable, "-m", "newsletter.cli", "--config", str(path), "serve", "--port",
                               str(port)], env={**os.environ, "PYTHONUNBUFFERED": "1"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2)
                break
            except OSError:
                time.sleep(0.1)

        def post(forwarded_for: str) -> int:
            request = urllib.request.Request(
                base + "/subscribe/weekly", data=urllib.parse.urlencode({"email": "not an address"}).encode(),
                headers={"X-Forwarded-For": forwarded_for, "Origin": "https://blog.example.org"})
            try:
                return urllib.request.urlopen(request, timeout=5).status
            except urllib.error.HTTPError as exc:
                return exc.code

        # Each visitor behind the proxy has a bucket of their own: the form's 400, not 429.
        assert [post("203.0.113.1"), post("203.0.113.2")] == [400, 400]
        assert post("203.0.113.1") == 429
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(base + "/unsubscribe/12-secret-token.abc.def", timeout=5)
    finally:
        server.terminate()
        log, _ = server.communicate(timeout=30)
    assert "/unsubscribe/[token]" in log and "secret-token" not in log, log
    assert "203.0.113.1" in log  # the access log names the visitor, not the proxy


def test_webhooks_are_mounted_per_provider_and_an_unknown_one_is_404(client, web_config, signer):
    from newsletter.webhooks import receivers

    found = receivers(web_config)
    assert set(found) == {"sendgrid", "postmark", "mailgun", "ses"}
    for receiver in found.values():  # the receiver protocol: verify first, then parse
        assert callable(receiver.verify) and callable(receiver.parse)
    body = b"[]"
    answer = client.post("/webhooks/nosuchprovider", content=body, headers=signer.headers(body))
    assert answer.status_code == 404 and "mailgun, postmark, sendgrid, ses" in answer.json()["error"]
    assert client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body)).json()["received"] == 0


def test_an_unsubscribe_by_link_records_its_issue_in_a_column_of_the_history(client, web_config):
    import sqlalchemy as sa

    token = unsubscribe_token(web_config, "grace@example.org")
    assert client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    with Store(web_config) as store, store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT to_status, issue, reason FROM history WHERE to_status = 'unsubscribed'"))
        assert [tuple(r) for r in rows] == [("unsubscribed", "2026-12-01", None)]
    shown = CliRunner().invoke(cli, ["--config", str(web_config.path), "subscribers", "show", "grace@example.org"])
    assert "active -> unsubscribed by one-click (the link in issue 2026-12-01)" in shown.output, shown.output


def test_the_migration_moves_the_issue_out_of_old_unsubscribe_reasons(tmp_path):
    import sqlalchemy as sa

    from newsletter.schema import MIGRATIONS, history, schema_version

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as conn:  # a store as version 6 left it
        schema_version.create(conn)
        for version, _what, step in MIGRATIONS:
            if version <= 6:
                step(conn)
        conn.execute(schema_version.insert().values(version=6))
        columns = [c for c in history.c if c.name != "issue"]
        conn.execute(sa.insert(sa.table("history", *[sa.column(c.name) for c in columns])).values(
            subscriber_id=1, list_id=1, from_status="active", to_status="unsubscribed", source="one-click",
            reason="issue 2026-11-24", at=sa.func.current_timestamp()))
    from newsletter.schema import upgrade

    assert upgrade(engine) >= 7
    with engine.connect() as conn:
        assert tuple(conn.execute(sa.text("SELECT issue, reason FROM history")).one()) == ("2026-11-24", None)


def test_a_confirmation_link_opened_again_says_it_is_done_and_every_end_page_leads_on(client, web_config, smtp):
    _controller, inbox = smtp
    subscribe(client, "twice@example.com")
    link = confirmation_link(inbox, "twice@example.com")
    page = client.get(link)
    done = client.post(link, data={"csrf": csrf(page.text)})
    assert "You are subscribed" in done.text
    again = client.get(link)  # the mail opened once more, days later
    assert again.status_code == 200 and "already subscribed" in again.text
    assert "Confirm my subscription" not in again.text
    for end in (done, again):
        assert 'href="/archive/weekly"' in end.text and 'href="https://example.com/"' in end.text


def test_a_damaged_or_expired_confirmation_link_says_what_to_do_without_jargon(client, web_config, clock):
    with Store(web_config) as store:
        sid = store.request_subscription("late@example.com", "weekly")[0]
    token = tokens.make_confirm(SECRET.encode(), sid, "weekly", ttl=3600, now=clock["now"])
    damaged = client.get(f"/confirm/{token[:-5]}")
    assert damaged.status_code == 400 and "token" not in damaged.text.lower() and "malformed" not in damaged.text
    assert "whole link" in damaged.text and 'href="/archive"' in damaged.text
    clock["now"] += 3601
    expired = client.get(f"/confirm/{token}")
    assert expired.status_code == 400 and "expired" in expired.text and "token" not in expired.text.lower()
    assert 'href="/subscribe/weekly"' in expired.text  # subscribe again, to the same list


def test_the_subscribe_page_shows_the_lists_latest_issues(client, web_config, tmp_path):
    issue = tmp_path / "issues" / "2026-12-01.md"
    issue.write_text((ROOT / "issues" / "2026-12-01.md").read_text())
    assert "Latest issues" not in client.get("/subscribe/weekly").text
    sent = CliRunner().invoke(cli, ["--config", str(web_config.path), "send", str(issue), "--list", "weekly", "--yes"])
    assert sent.exit_code == 0, sent.output
    page = client.get("/subscribe/weekly").text
    assert "Latest issues" in page and 'href="/archive/weekly/2026-12-01"' in page and "The Pipeline Weekly #48" in page


def test_an_unsubscribe_can_be_undone_from_its_page_by_confirming_again(client, web_config, smtp):
    _controller, inbox = smtp
    token = unsubscribe_token(web_config, "alan@example.com")
    page = client.get(f"/unsubscribe/{token}")
    done = client.post(f"/unsubscribe/{token}", data={"csrf": csrf(page.text)})
    assert "You are unsubscribed" in done.text and "Undo" in done.text
    assert status(web_config, "alan@example.com") == "unsubscribed"
    assert client.post(f"/unsubscribe/{token}", data={"undo": "1", "csrf": "forged"}).status_code == 403
    undone = client.post(f"/unsubscribe/{token}", data={"undo": "1", "csrf": csrf(done.text)})
    assert undone.status_code == 200 and "Check your inbox" in undone.text
    assert status(web_config, "alan@example.com") == "unconfirmed"  # back only once they confirm, by mail
    link = confirmation_link(inbox, "alan@example.com")
    confirm_page = client.get(link)
    client.post(link, data={"csrf": csrf(confirm_page.text)})
    assert status(web_config, "alan@example.com") == "active"
    later = client.get(f"/unsubscribe/{token}")  # the unsubscribe link still works after coming back
    assert "Stop sending" in later.text
