"""Shared fixtures: a config in a temporary folder that uses the repo's templates and sample issue."""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from newsletter import config as config_mod
from newsletter.cli import cli

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_ISSUE = ROOT / "issues" / "2026-12-01.md"
SHARED = ROOT.parent / "shared"
SECRET = "test-secret-please-change"
POSTGRES = os.environ.get("NEWSLETTER_TEST_POSTGRES", "")


def wait_for(condition, seconds: float) -> bool:
    """Poll `condition` until it holds or `seconds` have passed; its last answer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def ready_sample(folder: Path, date: str = "2026-12-01") -> Path:
    """The sample issue without its `draft: true` line (so that it can be pinned or fall due), dated `date`."""
    text = SAMPLE_ISSUE.read_text()
    text = re.sub(r"^draft: true.*\n", "", text, count=1, flags=re.M).replace("date: 2026-12-01", f"date: {date}")
    path = folder / "issues" / f"{date}.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def write_config(folder: Path, extra: str = "", *, base_url: str = "https://news.example.com",
                 backend: str = "sendgrid", api_base: str = "http://127.0.0.1:9", smtp_port: int = 25,
                 batch_size: int = 1000) -> Path:
    """A complete config in `folder`, pointing at the repo's templates and a store inside `folder`."""
    path = folder / "config.toml"
    path.write_text(
        f"""
[newsletter]
name = "Test Weekly"
from_email = "weekly@example.com"
from_name = "Test Weekly"
reply_to = "editor@example.com"
base_url = "{base_url}"
postal_address = "1 Test Street, Testville"
secret_env = "NEWSLETTER_SECRET"
templates = "{ROOT / 'templates'}"
issues_dir = "issues"

[store]
url = "sqlite:///newsletter.db"

[lists.weekly]
title = "Test Weekly"
description = "A test list."

[lists.daily]
title = "Test Daily"

[provider]
backend = "{backend}"

[sendgrid]
api_base = "{api_base}"
batch_size = {batch_size}
timeout = 2
max_retries = 3

[smtp]
host = "127.0.0.1"
port = {smtp_port}
security = "none"
timeout = 5
{extra}
""",
        encoding="utf-8",
    )
    (folder / "issues").mkdir(exist_ok=True)
    return path


@pytest.fixture
def config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    return write_config(tmp_path)


@pytest.fixture
def cfg(config_path: Path) -> config_mod.Config:
    return config_mod.load(config_path)


@pytest.fixture
def sample_issue(tmp_path: Path) -> Path:
    target = tmp_path / "issues" / SAMPLE_ISSUE.name
    target.parent.mkdir(exist_ok=True)
    shutil.copy(SAMPLE_ISSUE, target)
    return target


@pytest.fixture
def run(config_path: Path):
    """Run the CLI in-process with the test config; returns click's Result."""
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(cli, ["--config", str(config_path), *map(str, args)], input=input,
                             catch_exceptions=False)

    return invoke


@pytest.fixture
def smtp():
    """A real SMTP server (aiosmtpd) on loopback: (its controller, the inbox of what it received)."""
    from . import smtp_server

    controller, inbox = smtp_server.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture
def sendgrid_server():
    from .fake_sendgrid import FakeSendGrid

    server = FakeSendGrid("SG.test-key").start()
    yield server
    server.stop()


@pytest.fixture
def sg_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sendgrid_server) -> Path:
    """A config whose SendGrid backend is the fake server, with the sample list imported."""
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    path = write_config(tmp_path, api_base=sendgrid_server.url)
    text = path.read_text().replace("max_retries = 3", "max_retries = 3\nretry_backoff = 0.01")
    path.write_text(text)
    return path


@pytest.fixture
def sg_run(sg_config: Path):
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, ["--config", str(sg_config), *map(str, args)], catch_exceptions=False)

    return invoke


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request):
    """A fresh store: a SQLite file, or a new PostgreSQL database when a server is available."""
    if request.param == "sqlite":
        yield "sqlite:///newsletter.db"
        return
    if not POSTGRES:
        pytest.skip("NEWSLETTER_TEST_POSTGRES is not set: no PostgreSQL server to test on")
    name = f"newsletter_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES.replace("/?", "/postgres?"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        # No connection may sit idle in a transaction: PostgreSQL ends any that does for 5 seconds (the
        # sends and waits of the tests are longer; 1 s also caught the tests' own set-up on a loaded machine).
        conn.execute(sa.text(f"ALTER DATABASE \"{name}\" SET idle_in_transaction_session_timeout = '5s'"))
    yield POSTGRES.replace("/?", f"/{name}?")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pushgateway():
    """Debian's Pushgateway, started for the test (see `webhelpers.Pushgateway`)."""
    from .webhelpers import PUSHGATEWAY, Pushgateway

    if PUSHGATEWAY is None:
        pytest.skip("Debian's prometheus-pushgateway is not installed (.ci/run installs it)")
    gateway = Pushgateway()
    yield gateway
    gateway.stop()
