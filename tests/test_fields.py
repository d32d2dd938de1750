"""One home for subscriber field limits: `add`, import, the public form and the store refuse the same
values with the same words, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from newsletter import Newsletter
from newsletter.cli import cli
from newsletter.errors import FieldError

from .conftest import SECRET, write_config


@pytest.fixture
def config(tmp_path, monkeypatch, store_url):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('url = "sqlite:///newsletter.db"', f'url = "{store_url}"'))
    return path


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--name", "N" * 400, "the name is 400 characters; at most 300"),
    ("--attr", "city=" + "x" * 5000, "attribute 'city' is too long (names at most 100, values at most 2000"),
])
def test_add_and_import_refuse_an_over_long_field_with_the_same_words(config, tmp_path, option, value, said):
    runner = CliRunner()
    added = runner.invoke(cli, ["--config", str(config), "subscribers", "add", "ada@example.com", "--list", "weekly",
                                option, value])
    assert added.exit_code == 2 and added.exception is not None and "Traceback" not in added.output
    assert added.output.strip() == f"error: {said}" or said in added.output.strip().splitlines()[-1], added.output
    csv = tmp_path / "one.csv"
    column, cell = ("name", value) if option == "--name" else (value.split("=")[0], value.split("=")[1])
    csv.write_text(f"email,{column}\nada@example.com,{cell}\n")
    imported = runner.invoke(cli, ["--config", str(config), "subscribers", "import", str(csv), "--list", "weekly"])
    assert f"{csv}:2: rejected: {said}" in imported.output, imported.output
    with Newsletter.from_config(config) as nl:
        assert nl.store.find("ada@example.com") is None


def test_the_form_refuses_an_over_long_name_instead_of_cutting_it(config):
    with Newsletter.from_config(config) as nl:
        with pytest.raises(FieldError, match="at most 300") as caught:
            nl.links.subscribe("ada@example.com", "weekly", "N" * 301)
        assert caught.value.field == "name"
        nl.links.subscribe("ada@example.com", "weekly", "N" * 300)
        assert nl.store.find("ada@example.com").name == "N" * 300
