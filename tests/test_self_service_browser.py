"""A subscriber helping themselves, in headless Chromium against a running `newsletter serve`: links
opened twice, damaged or expired; the preference page (name, a second list confirmed from the mail,
leaving everything); an unsubscribe undone; the welcome mail that follows a confirmation."""

from __future__ import annotations

import re
import time

import pytest
from click.testing import CliRunner
from selenium.webdriver.common.by import By

from newsletter import Newsletter, config as config_mod, tokens
from newsletter.cli import cli

from . import browser, smtp_server
from .browser import heading_becomes, text_appears
from .conftest import ROOT, SECRET, wait_for, write_config
from .webhelpers import Served

pytestmark = pytest.mark.browser
ADDRESS = "self.service@example.com"


def last_link(inbox, kind: str, subject: str = "") -> str:
    """The /confirm/ or /preferences/ link of the newest mail to ADDRESS (with that subject)."""
    for _from, rcpt, msg in reversed(inbox.messages):
        if rcpt == [ADDRESS] and msg["Subject"].startswith(subject):
            return re.search(rf"(http://127\.0\.0\.1:\d+/{kind}/\S+)", msg.get_body(("plain",)).get_content()).group(1)
    raise AssertionError(f"no mail to {ADDRESS} with a {kind} link")


def statuses(path) -> dict[str, str]:
    with Newsletter(config_mod.load(path)) as nl:
        return {name: s for name, (s, _at, _src) in nl.subscribers.get(ADDRESS).memberships.items()}


def press(driver, selector: str) -> None:
    driver.find_element(By.CSS_SELECTOR, selector).click()


def test_a_subscriber_helps_themselves(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    controller, inbox = smtp_server.start()
    port = smtp_server.free_port()
    path = write_config(tmp_path, backend="smtp", smtp_port=controller.port, base_url=f"http://127.0.0.1:{port}")
    (tmp_path / "issues" / "welcome.md").write_text("---\nsubject: Welcome aboard\ndate: 2026-01-05\n---\nHello!\n")
    text = path.read_text().replace('description = "A test list."',
                                    'description = "A test list."\npublic = true\nwelcome = "issues/welcome.md"')
    path.write_text(text.replace('title = "Test Daily"', 'title = "Test Daily"\npublic = true'))
    driver = browser.webdriver(tmp_path)
    try:
        with Served(path, port) as server:
            driver.get(f"{server.url}/subscribe/weekly")
            driver.find_element(By.ID, "email").send_keys(ADDRESS)
            driver.find_element(By.ID, "name").send_keys("Sefl Service")
            press(driver, "button[type=submit]")
            heading_becomes(driver, "Check your inbox")
            confirm = last_link(inbox, "confirm")

            driver.get(confirm[:-6])  # a mail program broke the link
            heading_becomes(driver, "Something is wrong")
            assert "incomplete or damaged" in driver.page_source and "malformed" not in driver.page_source
            with Newsletter(config_mod.load(path)) as nl:
                person = nl.subscribers.get(ADDRESS)
            expired = tokens.make_confirm(SECRET.encode(), person.id, "weekly", 3600, now=time.time() - 7200,
                                          tag=tokens.address_tag(ADDRESS))
            driver.get(f"{server.url}/confirm/{expired}")
            heading_becomes(driver, "Something is wrong")
            assert "has expired" in driver.page_source
            assert driver.find_element(By.LINK_TEXT, "Subscribe again").get_attribute("href").endswith(
                "/subscribe/weekly")

            driver.get(confirm)
            heading_becomes(driver, "Confirm your subscription")
            press(driver, "button[type=submit]")
            heading_becomes(driver, "You are subscribed")
            assert "a welcome mail is on its way" in driver.page_source
            assert wait_for(lambda: any(m["Subject"] == "Welcome aboard" for _f, _r, m in inbox.messages), 20)
            driver.get(confirm)  # the link opened again
            heading_becomes(driver, "You are already subscribed")

            # An issue goes out; its footer leads to the preference page.
            sent = CliRunner().invoke(cli, ["--config", str(path), "send", str(ROOT / "issues" / "2026-12-01.md"),
                                            "--list", "weekly", "--yes"])
            assert sent.exit_code == 0, sent.output
            preferences = last_link(inbox, "preferences")
            driver.get(preferences)
            heading_becomes(driver, "Your preferences")
            name = driver.find_element(By.ID, "name")
            name.clear()
            name.send_keys("Self Service")
            press(driver, "input[value=daily]")
            press(driver, "button[name=save]")
            text_appears(driver, "open the link in the mail we just sent you")
            assert statuses(path) == {"weekly": "active", "daily": "unconfirmed"}
            driver.get(last_link(inbox, "confirm", "Please confirm: Test Daily"))
            heading_becomes(driver, "Confirm your subscription")
            press(driver, "button[type=submit]")
            heading_becomes(driver, "You are subscribed")
            assert statuses(path) == {"weekly": "active", "daily": "active"}
            with Newsletter(config_mod.load(path)) as nl:
                assert nl.subscribers.get(ADDRESS).name == "Self Service"
            assert sum(m["Subject"] == "Welcome aboard" for _f, _r, m in inbox.messages) == 1  # daily has none

            driver.get(preferences)
            heading_becomes(driver, "Your preferences")
            assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
            press(driver, "button.quiet")  # leave everything
            text_appears(driver, "You left Test Weekly, Test Daily")
            assert statuses(path) == {"weekly": "unsubscribed", "daily": "unsubscribed"}

            # The unsubscribe link now says so, and undoes it through a confirmation by mail.
            mail = next(m for _f, rcpt, m in reversed(inbox.messages) if rcpt == [ADDRESS] and m["List-Unsubscribe"])
            unsubscribe = mail["List-Unsubscribe"].strip("<>")
            driver.get(unsubscribe)
            heading_becomes(driver, "Unsubscribe from Test Weekly")
            assert "already unsubscribed" in driver.page_source
            assert driver.find_element(By.LINK_TEXT, "Choose what you get instead")
            before = len(inbox.messages)
            press(driver, "input[name=undo] ~ button")
            heading_becomes(driver, "Check your inbox")
            assert wait_for(lambda: len(inbox.messages) > before, 20)
            driver.get(last_link(inbox, "confirm", "Please confirm: Test Weekly"))
            press(driver, "button[type=submit]")
            heading_becomes(driver, "You are subscribed")
            assert statuses(path) == {"weekly": "active", "daily": "unsubscribed"}
            time.sleep(1)  # the web app's welcome pass: a member coming back gets no second welcome
            assert sum(m["Subject"] == "Welcome aboard" for _f, _r, m in inbox.messages) == 1
    finally:
        driver.quit()
        controller.stop()
