"""Edges found by trying the product from outside: a CSV quote never closed, an import stopped mid-way,
`init` into symlinks, control characters and over-long local parts from the public form, and the
preview server asked for by another host name."""

from __future__ import annotations

import http.client
import threading

import pytest
from click.testing import CliRunner

from newsletter import Newsletter
from newsletter.cli import cli
from newsletter.errors import InputError

from .conftest import SECRET, ready_sample, write_config


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = write_config(tmp_path)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(cli, ["--config", str(config), *map(str, args)])

    invoke.config = config  # type: ignore[attr-defined]
    return invoke


def members(config) -> set[str]:
    with Newsletter.from_config(config) as nl:
        return {m["email"] for m in nl.store.members("weekly")}


def unclosed_quote_csv(folder, before: int = 10, after: int = 2000):
    path = folder / "people.csv"
    rows = [f"b{i}@example.com,Before {i}" for i in range(before)]
    rows.append('broken@example.com,"Ada Lovelace')  # the quote is never closed
    rows += [f"a{i}@example.com,After {i}" for i in range(after)]
    path.write_text("email,name\n" + "\n".join(rows) + "\n")
    return path


def test_an_unclosed_quote_rejects_its_own_row_and_imports_every_row_after_it(run, tmp_path):
    result = run("subscribers", "import", unclosed_quote_csv(tmp_path), "--list", "weekly")
    assert result.exit_code == 0, result.output
    assert "added 2010" in result.output and "rejected 1" in result.output, result.output
    assert ":12: rejected:" in result.output and "quote" in result.output
    got = members(run.config)
    assert len(got) == 2010 and "broken@example.com" not in got and "a1999@example.com" in got


def test_an_unclosed_quote_with_strict_imports_nothing(run, tmp_path):
    result = run("subscribers", "import", unclosed_quote_csv(tmp_path), "--list", "weekly", "--strict")
    assert result.exit_code != 0
    assert ":12:" in result.output and "quote" in result.output and "nothing was imported" in result.output
    assert members(run.config) == set()


def test_a_quote_that_swallows_more_than_the_csv_field_limit_is_one_rejected_row(run, tmp_path):
    path = tmp_path / "long.csv"
    rows = [f"r{i}@example.com,Reader {i},{'x' * 40}" for i in range(11_000)]
    rows.insert(10_500, 'bad@example.com,"never closed,')  # swallows ~470,000 characters: over csv's limit
    path.write_text("email,name,note\n" + "\n".join(rows) + "\n")
    result = run("subscribers", "import", path, "--list", "weekly")
    assert result.exit_code == 0, result.output
    assert ":10502: rejected:" in result.output and "quote" in result.output, result.output
    assert len(members(run.config)) == 11_000


def test_init_refuses_to_write_through_symlinks(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    target = tmp_path / "project"
    target.mkdir()
    (target / "templates").symlink_to(elsewhere)
    result = CliRunner().invoke(cli, ["init", str(target)])
    assert result.exit_code != 0 and "symlink" in result.output, result.output
    assert list(elsewhere.iterdir()) == []
    (target / "templates").unlink()
    (target / "config.toml").symlink_to(tmp_path / "nowhere.toml")  # dangling
    result = CliRunner().invoke(cli, ["init", str(target)])
    assert result.exit_code != 0 and "symlink" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "nowhere.toml").exists()
    (target / "config.toml").unlink()
    (target / "issues").symlink_to(tmp_path / "gone")  # a dangling folder link
    result = CliRunner().invoke(cli, ["init", str(target)])
    assert result.exit_code != 0 and "symlink" in result.output and isinstance(result.exception, SystemExit)
    assert not (tmp_path / "gone").exists()


def test_the_subscribe_form_refuses_control_characters_in_the_name(tmp_path, monkeypatch, store_url):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('url = "sqlite:///newsletter.db"', f'url = "{store_url}"'))
    with Newsletter.from_config(config) as nl:
        for name in ("Ada\0Lovelace", "Ada\x1b[31m", "Ada\x7f"):
            with pytest.raises(InputError, match="control character"):
                nl.links.subscribe("ada@example.com", "weekly", name)
        assert nl.store.find("ada@example.com") is None
        nl.links.subscribe("ada@example.com", "weekly", "Ada\tLovelace")  # a tab is a space, as a line break is
        assert nl.store.find("ada@example.com").name == "Ada Lovelace"


@pytest.mark.parametrize("local", ["a" * 65, "ü" * 33])
def test_a_local_part_over_64_octets_is_refused(local):
    from newsletter.addresses import normalize

    normalize("a" * 64 + "@example.com")
    with pytest.raises(InputError, match="64"):
        normalize(f"{local}@example.com")


def test_preview_answers_only_its_own_host(tmp_path, monkeypatch):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    config = write_config(tmp_path)
    issue = ready_sample(tmp_path)
    with Newsletter.from_config(config) as nl:
        _rendered, server = nl.issues.preview(issue, "127.0.0.1", 0)
        port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            def status(host: str) -> int:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/", headers={"Host": host})
                answer = conn.getresponse()
                answer.read()
                conn.close()
                return answer.status

            assert status(f"127.0.0.1:{port}") == 200
            assert status(f"localhost:{port}") == 200
            assert status(f"attacker.example:{port}") == 421  # DNS rebinding: another name for this address
            assert status("") == 421
        finally:
            server.shutdown()
            server.server_close()
