"""A person's path through the real server in headless Chromium: subscribe, confirm, unsubscribe."""

import re

import pytest
from click.testing import CliRunner
from selenium.webdriver.common.by import By

from newsletter import Newsletter, config as config_mod
from newsletter.cli import cli
from newsletter.store import Store
from newsletter.web import create_app

from . import browser, smtp_server
from .browser import heading_becomes
from .conftest import ROOT, SECRET, write_config
from .webhelpers import LiveServer

pytestmark = pytest.mark.browser


def membership(cfg, address):
    with Store(cfg) as store:
        found = store.find(address)
        return found.memberships.get("weekly") if found else None


def test_subscribe_confirm_and_unsubscribe_in_a_browser(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    controller, inbox = smtp_server.start()
    port = smtp_server.free_port()
    path = write_config(tmp_path, backend="smtp", smtp_port=controller.port, base_url=f"http://127.0.0.1:{port}")
    cfg = config_mod.load(path)
    driver = browser.webdriver(tmp_path)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        with LiveServer(create_app(Newsletter(cfg)), port=port) as server:
            driver.get(f"{server.url}/subscribe/weekly")
            assert "Subscribe to Test Weekly" in driver.title
            driver.find_element(By.ID, "email").send_keys("browser.reader@example.com")
            driver.find_element(By.ID, "name").send_keys("Browser Reader")
            driver.save_screenshot(str(shots / "1-subscribe.png"))
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            heading_becomes(driver, "Check your inbox")
            driver.save_screenshot(str(shots / "2-check-inbox.png"))
            assert membership(cfg, "browser.reader@example.com")[0] == "unconfirmed"

            _from, rcpt, msg = inbox.messages[-1]
            assert rcpt == ["browser.reader@example.com"]
            link = re.search(r"(http://127\.0\.0\.1:\d+/confirm/\S+)", msg.get_body(("plain",)).get_content()).group(1)
            driver.get(link)
            heading_becomes(driver, "Confirm your subscription")
            assert membership(cfg, "browser.reader@example.com")[0] == "unconfirmed"  # opening it is not enough
            driver.save_screenshot(str(shots / "3-confirm.png"))
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            heading_becomes(driver, "You are subscribed")
            assert membership(cfg, "browser.reader@example.com")[0] == "active"

            # The issue goes out; its unsubscribe link leads to the page with the button.
            sent = CliRunner().invoke(cli, ["--config", str(path), "send", str(ROOT / "issues" / "2026-12-01.md"),
                                            "--list", "weekly", "--yes"])
            assert sent.exit_code == 0, sent.output
            issue_mail = inbox.messages[-1][2]
            unsubscribe = issue_mail["List-Unsubscribe"].strip("<>")
            assert unsubscribe in issue_mail.get_body(("html",)).get_content()
            driver.get(unsubscribe)
            heading_becomes(driver, "Unsubscribe from Test Weekly")
            assert "b***r@example.com" in driver.page_source
            assert membership(cfg, "browser.reader@example.com")[0] == "active"
            driver.save_screenshot(str(shots / "4-unsubscribe.png"))
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            heading_becomes(driver, "You are unsubscribed")
            driver.save_screenshot(str(shots / "5-unsubscribed.png"))
            state, _at, source = membership(cfg, "browser.reader@example.com")
            assert (state, source) == ("unsubscribed", "web")
            # The page fits a phone: nothing wider than the viewport.
            assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        driver.quit()
        controller.stop()
    assert all((shots / f).stat().st_size > 5_000 for f in
               ("1-subscribe.png", "2-check-inbox.png", "3-confirm.png", "4-unsubscribe.png", "5-unsubscribed.png"))


def test_the_form_printed_by_newsletter_form_works_from_another_sites_page(tmp_path, monkeypatch):
    import http.server
    import threading

    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    controller, inbox = smtp_server.start()
    port, site_port = smtp_server.free_port(), smtp_server.free_port()
    site = f"http://localhost:{site_port}"  # another origin: another host name and port
    path = write_config(tmp_path, backend="smtp", smtp_port=controller.port, base_url=f"http://127.0.0.1:{port}",
                        extra=f'\n[web]\nallowed_origins = ["{site}"]\n')
    printed = CliRunner().invoke(cli, ["--config", str(path), "form", "weekly"])
    assert printed.exit_code == 0 and "warning" not in printed.output, printed.output
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text(f"<!doctype html><title>Our blog</title><h1>Our blog</h1>{printed.output}")
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(www), **kw)  # noqa: E731
    blog = http.server.ThreadingHTTPServer(("127.0.0.1", site_port), handler)
    threading.Thread(target=blog.serve_forever, daemon=True).start()
    cfg = config_mod.load(path)
    driver = browser.webdriver(tmp_path)
    try:
        with LiveServer(create_app(Newsletter(cfg)), port=port):
            driver.get(site + "/")
            assert driver.title == "Our blog"
            driver.find_element(By.ID, "newsletter-email").send_keys("from.the.blog@example.com")
            driver.find_element(By.CSS_SELECTOR, "form.newsletter-signup button").click()
            heading_becomes(driver, "Check your inbox")
            assert driver.current_url == f"http://127.0.0.1:{port}/subscribe/weekly"
            assert membership(cfg, "from.the.blog@example.com")[0] == "unconfirmed"  # double opt-in still
            _from, rcpt, msg = inbox.messages[-1]
            assert rcpt == ["from.the.blog@example.com"]
            assert f"http://127.0.0.1:{port}/confirm/" in msg.get_body(("plain",)).get_content()
    finally:
        driver.quit()
        blog.shutdown()
        controller.stop()
