"""Where the config comes from: --config, $NEWSLETTER_CONFIG, ./config.toml, then the user's XDG folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter import config as config_mod
from newsletter.cli import cli

MINIMAL = '[newsletter]\nname = "{name}"\nfrom_email = "news@example.com"\n\n[lists.weekly]\ntitle = "Weekly"\n'


def write(folder: Path, name: str, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(MINIMAL.format(name=name) + extra)
    return path


@pytest.fixture
def places(tmp_path, monkeypatch):
    """A working folder, a home and XDG folders of its own, nothing set."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    for variable in ("NEWSLETTER_CONFIG", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(variable, raising=False)
    return work, home, tmp_path


def test_the_first_of_option_variable_working_folder_and_xdg_wins(places, monkeypatch):
    work, home, tmp = places
    xdg = write(home / ".config" / "newsletter", "from xdg default")
    assert config_mod.load().newsletter.name == "from xdg default"  # ~/.config when XDG_CONFIG_HOME is unset
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp / "xdg"))
    write(tmp / "xdg" / "newsletter", "from xdg")
    assert config_mod.load().newsletter.name == "from xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/path")  # the spec says to ignore a relative one
    assert config_mod.load().path == xdg
    write(work, "from the working folder")
    assert config_mod.load().newsletter.name == "from the working folder"
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(write(tmp / "env", "from the variable")))
    assert config_mod.load().newsletter.name == "from the variable"
    given = write(tmp / "given", "given")
    assert config_mod.load(given).newsletter.name == "given"
    assert config_mod.load(given).found_by == "given by --config"


def test_an_xdg_config_keeps_its_data_under_xdg_data_home(places, monkeypatch):
    _work, home, tmp = places
    write(home / ".config" / "newsletter", "mine")
    assert config_mod.load().store.url == f"sqlite:///{home}/.local/share/newsletter/newsletter.db"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp / "data"))
    assert config_mod.load().store.url == f"sqlite:///{tmp}/data/newsletter/newsletter.db"
    write(home / ".config" / "newsletter", "mine", '\n[store]\nurl = "sqlite:///own.db"\n')
    assert config_mod.load().store.url == f"sqlite:///{home}/.config/newsletter/own.db"  # given: as always


def test_a_project_config_keeps_its_store_beside_it(places):
    work, _home, _tmp = places
    write(work, "project")
    assert config_mod.load().store.url == f"sqlite:///{work}/subscribers/newsletter.db"


def test_config_path_says_which_file_and_why(places, monkeypatch):
    work, home, tmp = places
    runner = CliRunner()
    missing = runner.invoke(cli, ["config", "path"])
    assert missing.exit_code == 2
    assert "config file not found (none found" in missing.output and str(home / ".config/newsletter") in missing.output
    assert "`newsletter init`" in missing.output  # what to do about it
    write(home / ".config" / "newsletter", "mine")
    found = runner.invoke(cli, ["config", "path"])
    assert found.exit_code == 0 and found.output.startswith(str(home / ".config/newsletter/config.toml"))
    assert "user's config folder" in found.output
    write(work, "project")
    assert "found in the working folder" in runner.invoke(cli, ["config", "path"]).output
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(write(tmp / "env", "env")))
    assert "named by $NEWSLETTER_CONFIG" in runner.invoke(cli, ["config", "path"]).output
    given = runner.invoke(cli, ["--config", str(write(tmp / "given", "given")), "config", "path"])
    assert given.output == f"{tmp / 'given' / 'config.toml'}  (given by --config)\n"
    # Any other command says the same when there is nothing to read.
    monkeypatch.delenv("NEWSLETTER_CONFIG")
    (work / "config.toml").unlink()
    (home / ".config" / "newsletter" / "config.toml").unlink()
    failed = runner.invoke(cli, ["status", "x"])
    assert failed.exit_code == 2 and "config file not found (none found" in failed.output
