"""The subscribe form's optional proof of work ([web] proof_of_work): ALTCHA challenges, checked server-side."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
from altcha.v1 import solve_challenge
from click.testing import CliRunner
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from starlette.testclient import TestClient

from newsletter import Newsletter, config as config_mod
from newsletter.cli import cli
from newsletter.web import create_app

from . import browser, smtp_server
from .browser import heading_becomes
from .conftest import SECRET, write_config
from .webhelpers import Served


def pow_config(tmp_path, smtp_port: int, base_url: str = "https://testserver", on: bool = True):
    return write_config(tmp_path, backend="smtp", smtp_port=smtp_port, base_url=base_url,
                        extra=f'\n[web]\nproof_of_work = {"true" if on else "false"}\nproof_of_work_difficulty = 5000\n'
                              'allowed_origins = ["https://blog.example.org"]\n')


def answer(client) -> str:
    """Solve a challenge from the server as the widget does, and give its form field."""
    challenge = client.get("/challenge").json()
    solved = solve_challenge(challenge["challenge"], challenge["salt"], challenge["algorithm"], challenge["maxNumber"])
    return base64.b64encode(json.dumps({**{k: challenge[k] for k in ("algorithm", "challenge", "salt", "signature")},
                                        "number": solved.number}).encode()).decode()


def post(client, **fields):
    page = client.get("/subscribe/weekly")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return client.post("/subscribe/weekly", data={"csrf": csrf, **fields})


def status(nl, address):
    found = nl.store.find(address)
    return found.memberships["weekly"][0] if found else None


def test_a_form_without_a_solved_challenge_is_refused_and_one_with_it_accepted_once(tmp_path, monkeypatch, smtp):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    nl = Newsletter(config_mod.load(pow_config(tmp_path, smtp[0].port)))
    with TestClient(create_app(nl), base_url="https://testserver") as client:
        page = client.get("/subscribe/weekly")
        assert '<altcha-widget challengeurl="/challenge"' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        refused = post(client, email="robot@example.com")
        assert refused.status_code == 400 and "did not finish its check" in refused.text
        assert status(nl, "robot@example.com") is None and smtp[1].messages == []

        solved = answer(client)
        accepted = post(client, email="person@example.com", altcha=solved)
        assert accepted.status_code == 200 and "Check your inbox" in accepted.text
        assert status(nl, "person@example.com") == "unconfirmed" and len(smtp[1].messages) == 1
        again = post(client, email="another@example.com", altcha=solved)  # one answer, one form
        assert again.status_code == 400 and status(nl, "another@example.com") is None

        forged = json.loads(base64.b64decode(answer(client)))
        forged["number"] += 1
        wrong = post(client, email="another@example.com", altcha=base64.b64encode(json.dumps(forged).encode()).decode())
        assert wrong.status_code == 400
        assert post(client, email="another@example.com", altcha="not base64 at all").status_code == 400

        script = client.get("/static/altcha.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
        assert client.get("/static/../config.toml").status_code == 404
        assert client.get("/static/secrets.js").status_code == 404
        cross = client.get("/challenge", headers={"Origin": "https://blog.example.org"})
        assert cross.headers["access-control-allow-origin"] == "https://blog.example.org"
        assert "access-control-allow-origin" not in client.get("/challenge", headers={"Origin": "https://evil.test"}).headers


def test_an_expired_challenge_is_refused(tmp_path, monkeypatch, smtp):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    nl = Newsletter(config_mod.load(pow_config(tmp_path, smtp[0].port)))
    with TestClient(create_app(nl, clock=lambda: time.time() - 3600), base_url="https://testserver") as client:
        late = post(client, email="slow@example.com", altcha=answer(client))  # issued an hour ago: expired
        assert late.status_code == 400 and status(nl, "slow@example.com") is None


def test_without_it_there_is_no_widget_no_script_and_no_challenge(tmp_path, monkeypatch, smtp):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    nl = Newsletter(config_mod.load(pow_config(tmp_path, smtp[0].port, on=False)))
    with TestClient(create_app(nl), base_url="https://testserver") as client:
        page = client.get("/subscribe/weekly")
        assert "altcha" not in page.text and "script-src" not in page.headers["content-security-policy"]
        assert client.get("/challenge").status_code == 404
        assert post(client, email="person@example.com").status_code == 200


def test_the_embedded_form_carries_the_whole_widget_from_this_server(tmp_path, monkeypatch, smtp):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    printed = CliRunner().invoke(cli, ["--config", str(pow_config(tmp_path, smtp[0].port)), "form", "weekly"])
    assert printed.exit_code == 0, printed.output
    assert '<script src="https://testserver/static/altcha-bundle.js" defer></script>' in printed.output
    assert 'challengeurl="https://testserver/challenge"' in printed.output


@pytest.mark.browser
def test_a_person_in_chromium_passes_the_check_without_noticing(tmp_path, monkeypatch, smtp):
    """The widget, its worker and styles load under the page's CSP, solve the challenge on load, and the
    form goes through."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    port = smtp_server.free_port()
    path = pow_config(tmp_path, smtp[0].port, base_url=f"http://127.0.0.1:{port}")
    driver = browser.webdriver(tmp_path)
    try:
        with Served(path, port) as server:
            driver.get(f"{server.url}/subscribe/weekly")
            WebDriverWait(driver, 30).until(lambda d: d.execute_script(
                "const f = document.querySelector('input[name=altcha]'); return f ? f.value : '';"))
            driver.find_element(By.ID, "email").send_keys("real.person@example.com")
            driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            heading_becomes(driver, "Check your inbox")
        with Newsletter(config_mod.load(path)) as nl:
            assert status(nl, "real.person@example.com") == "unconfirmed"
    finally:
        driver.quit()
