"""The built wheel, installed in a fresh venv and run from an empty folder far from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import zipfile

import pytest

from .conftest import ROOT, SECRET
from .smtp_server import free_port

pytestmark = [pytest.mark.wheel, pytest.mark.slow]


def test_the_wheel_installs_and_runs_init_render_dry_run_and_serve_from_an_empty_folder(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)],
                   check=True, timeout=300, capture_output=True)
    (wheel,) = dist.glob("newsletter_pipeline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("newsletter/skeleton/config.toml", "newsletter/skeleton/templates/issue.mjml",
                    "newsletter/skeleton/templates/web/subscribe.html", "newsletter/data/caniemail.json"):
        assert shipped in names
    assert any(name.endswith("licenses/LICENSE") for name in names)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], check=True, timeout=900,
                   capture_output=True)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NEWSLETTER_CONFIG", "PYTHONPATH")}
    env["NEWSLETTER_SECRET"] = SECRET
    command = str(venv / "bin" / "newsletter")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([command, *args], cwd=empty, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    skeleton = [p for p in (ROOT / "newsletter" / "skeleton").rglob("*") if p.is_file() and ".db" not in p.name]
    assert f"wrote {len(skeleton)} files into site" in run("init", "site").stdout
    config = "site/config.toml"
    run("--config", config, "subscribers", "import", "site/subscribers/sample.csv", "--list", "weekly")
    rendered = run("--config", config, "render", "site/issues/2026-12-01.md", "--out", "out")
    assert "out/2026-12-01.html" in rendered.stdout and "Email client support" in rendered.stdout
    dry = run("--config", config, "send", "site/issues/2026-12-01.md", "--list", "weekly", "--dry-run",
              "--out", "eml")
    assert "recipients:   12 in 1 batches" in dry.stdout and len(list((empty / "eml").glob("*.eml"))) == 3
    assert (empty / "site" / "subscribers" / "newsletter.db").exists()  # relative to the config, not the cwd
    # The web pages come from the package when the project has no web templates of its own.
    for page in (empty / "site" / "templates" / "web").iterdir():
        page.unlink()
    port = free_port()
    server = subprocess.Popen([command, "--config", config, "serve", "--port", str(port)], cwd=empty, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        status, body = 0, ""
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/subscribe/weekly", timeout=5) as response:
                    status, body = response.status, response.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert status == 200 and "The Pipeline Weekly" in body, server.stderr.read() if server.poll() else status
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
    finally:
        server.terminate()
        server.communicate(timeout=30)
