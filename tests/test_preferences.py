"""The preference page: reached from every issue's footer, it changes lists and name through the consent rules."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from newsletter import Newsletter, config as config_mod
from newsletter.cli import cli
from newsletter.web import create_app

from .conftest import ROOT, SECRET, write_config

SAMPLE_ISSUE = ROOT / "issues" / "2026-12-01.md"


@pytest.fixture
def cfg(tmp_path, monkeypatch, smtp):
    """Two lists: weekly, and daily, which is public; a third, staff, is not offered to anyone not on it."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = write_config(tmp_path, backend="smtp", smtp_port=smtp[0].port, base_url="https://testserver")
    text = path.read_text().replace('[lists.daily]\ntitle = "Test Daily"',
                                    '[lists.daily]\ntitle = "Test Daily"\npublic = true\n\n'
                                    '[lists.staff]\ntitle = "Staff notes"')
    path.write_text(text)
    return config_mod.load(path)


def issue_links(cfg, inbox, address: str) -> tuple[str, str]:
    """Send the sample issue to weekly; (unsubscribe path, preferences path) from the mail to `address`."""
    sent = CliRunner().invoke(cli, ["--config", str(cfg.path), "send", str(SAMPLE_ISSUE), "--list", "weekly", "--yes"])
    assert sent.exit_code == 0, sent.output
    msg = next(m for _f, rcpt, m in reversed(inbox.messages) if rcpt == [address])
    html, text = msg.get_body(("html",)).get_content(), msg.get_body(("plain",)).get_content()
    preferences = re.search(r'href="https://testserver(/preferences/[^"]+)"', html).group(1)
    assert f"Preferences: https://testserver{preferences}" in text
    unsubscribe = msg["List-Unsubscribe"].strip("<>").removeprefix("https://testserver")
    assert unsubscribe.rpartition("/")[2] == preferences.rpartition("/")[2]  # one token, one signature
    return unsubscribe, preferences


def csrf(text: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', text).group(1)


def statuses(nl: Newsletter, address: str) -> dict[str, str]:
    return {name: status for name, (status, _at, _source) in nl.subscribers.get(address).memberships.items()}


def test_change_lists_and_name_through_the_consent_rules(cfg, smtp):
    inbox = smtp[1]
    nl = Newsletter(cfg)
    nl.subscribers.add("reader@example.com", "weekly", name="Raeder")
    _unsubscribe, link = issue_links(cfg, inbox, "reader@example.com")
    with TestClient(create_app(nl), base_url="https://testserver") as client:
        page = client.get(link)
        assert page.status_code == 200 and "Your preferences" in page.text
        assert "r***r@example.com" in page.text and 'value="Raeder"' in page.text
        offered = re.findall(r'name="list" value="(\w+)"( checked)?', page.text)
        assert offered == [("weekly", " checked"), ("daily", "")]  # staff is not public, nor theirs

        before = len(inbox.messages)
        saved = client.post(link, data={"csrf": csrf(page.text), "name": "Reader", "list": ["daily"]})
        assert saved.status_code == 200
        assert "You left Test Weekly" in saved.text and "To join Test Daily, open the link" in saved.text
        assert statuses(nl, "reader@example.com") == {"weekly": "unsubscribed", "daily": "unconfirmed"}
        assert nl.subscribers.get("reader@example.com").name == "Reader"
        (confirmation,) = inbox.messages[before:]
        assert confirmation[1] == ["reader@example.com"] and confirmation[2]["Subject"] == "Please confirm: Test Daily"
        confirm = re.search(r"https://testserver(/confirm/\S+)",
                            confirmation[2].get_body(("plain",)).get_content()).group(1)
        form = client.get(confirm)
        client.post(confirm, data={"csrf": csrf(form.text)})
        assert statuses(nl, "reader@example.com") == {"weekly": "unsubscribed", "daily": "active"}
        history = nl.subscribers.history("reader@example.com")
        assert {(h["list"], h["to_status"], h["source"]) for h in history} >= {
            ("weekly", "unsubscribed", "preferences"), ("daily", "unconfirmed", "preferences")}

        # Coming back to a list one left also takes a confirmation.
        page = client.get(link)
        client.post(link, data={"csrf": csrf(page.text), "name": "Reader", "list": ["daily", "weekly"]})
        assert statuses(nl, "reader@example.com") == {"weekly": "unconfirmed", "daily": "active"}


def test_leave_everything(cfg, smtp):
    nl = Newsletter(cfg)
    nl.subscribers.add("reader@example.com", "weekly")
    nl.subscribers.add("reader@example.com", "daily")
    nl.subscribers.add("reader@example.com", "staff")
    _unsubscribe, link = issue_links(cfg, smtp[1], "reader@example.com")
    with TestClient(create_app(nl), base_url="https://testserver") as client:
        page = client.get(link)
        assert re.findall(r'name="list" value="(\w+)"', page.text) == ["weekly", "daily", "staff"]  # theirs: offered
        done = client.post(link, data={"csrf": csrf(page.text), "leave": "all"})
        assert "You left Test Weekly, Test Daily, Staff notes" in done.text
    assert set(statuses(nl, "reader@example.com").values()) == {"unsubscribed"}


def test_a_save_without_the_csrf_token_or_with_a_forged_link_changes_nothing(cfg, smtp):
    nl = Newsletter(cfg)
    nl.subscribers.add("reader@example.com", "weekly", name="Reader")
    _unsubscribe, link = issue_links(cfg, smtp[1], "reader@example.com")
    with TestClient(create_app(nl), base_url="https://testserver") as client:
        refused = client.post(link, data={"leave": "all"})
        assert refused.status_code == 403
        forged = client.get(link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB"))
        assert forged.status_code == 400 and "Open the whole link" in forged.text
        page = client.get(link)
        bad = client.post(link, data={"csrf": csrf(page.text), "name": "Bad\x00Name", "list": ["weekly"]})
        assert bad.status_code == 400 and "Please check your name" in bad.text
    assert statuses(nl, "reader@example.com") == {"weekly": "active"}
    assert nl.subscribers.get("reader@example.com").name == "Reader"


def test_the_unsubscribe_page_leads_to_the_preference_page(cfg, smtp):
    nl = Newsletter(cfg)
    nl.subscribers.add("reader@example.com", "weekly")
    unsubscribe, link = issue_links(cfg, smtp[1], "reader@example.com")
    with TestClient(create_app(nl), base_url="https://testserver") as client:
        page = client.get(unsubscribe)
        done = client.post(unsubscribe, data={"csrf": csrf(page.text)})
        assert "You are unsubscribed" in done.text and f'href="{link}"' in done.text
