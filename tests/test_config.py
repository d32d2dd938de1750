from pathlib import Path

import pytest

from newsletter import config as config_mod
from newsletter.errors import ConfigError, TokenError, UnknownListError

from .conftest import write_config


def test_loads_sample_config_from_repo():
    cfg = config_mod.load(Path(__file__).parent.parent / "config.toml")
    assert cfg.newsletter.name
    assert "weekly" in cfg.lists
    # A relative SQLite path is made relative to the config file, not the working directory.
    assert cfg.store.url.endswith("/subscribers/newsletter.db")
    assert cfg.store.url.startswith("sqlite:////")


def test_env_var_chooses_config(tmp_path, monkeypatch):
    path = write_config(tmp_path)
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(path))
    assert config_mod.load().newsletter.name == "Test Weekly"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.replace('name = "Test Weekly"\n', 'name = "Test Weekly"\nnmae = "x"\n', 1),
         "[newsletter] nmae: unknown key"),
        (lambda s: s.replace("batch_size = 1000", 'batch_size = "many"'),
         "[sendgrid] batch_size: expected int, got str"),
        (lambda s: s.replace('from_email = "weekly@example.com"\n', ""),
         "[newsletter] from_email: required key missing"),
        (lambda s: s.replace('backend = "sendgrid"', 'backend = "carrier-pigeon"'),
         "[provider] backend: must be one of sendgrid, postmark, mailgun, ses, smtp"),
        (lambda s: s + "\n[extras]\nx = 1\n", "[extras]: unknown section"),
        (lambda s: s.replace("[lists.weekly]", "[lists.weekly]\ncolour = 'red'"),
         "[lists.weekly] colour: unknown key"),
        (lambda s: s + "\n[[broken", "invalid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, edit, message):
    path = write_config(tmp_path)
    path.write_text(edit(path.read_text()))
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    text = str(info.value)
    assert message in text
    assert str(path) in text
    assert "\n" not in text


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        config_mod.load(tmp_path / "nope.toml")


def test_unknown_list_names_known_ones(cfg):
    with pytest.raises(UnknownListError, match=r"known|declared") as info:
        cfg.list("montly")
    assert "daily, weekly" in str(info.value)


def test_secret_comes_only_from_environment(cfg, monkeypatch):
    monkeypatch.delenv("NEWSLETTER_SECRET")
    with pytest.raises(TokenError, match="NEWSLETTER_SECRET is not set"):
        cfg.secret()
    monkeypatch.setenv("NEWSLETTER_SECRET", "s3")
    assert cfg.secret() == b"s3"


def test_store_settings_keep_every_key_when_the_url_is_resolved(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace('url = "sqlite:///newsletter.db"',
                                             'url = "sqlite:///newsletter.db"\nretry_for = 4.5'))
    loaded = config_mod.load(path)
    assert loaded.store.retry_for == 4.5
    assert loaded.store.url == f"sqlite:///{tmp_path / 'newsletter.db'}"


@pytest.mark.parametrize(("backend", "section", "key"), [("sendgrid", "sendgrid", "click_tracking"),
                                                          ("postmark", "postmark", "track_links"),
                                                          ("mailgun", "mailgun", "track_clicks")])
def test_click_tracking_is_the_configured_providers(tmp_path, backend, section, key):
    path = write_config(tmp_path, backend=backend)
    assert not config_mod.load(path).click_tracking
    path.write_text(path.read_text().replace(f"[{section}]\n", f"[{section}]\n{key} = true\n", 1)
                    if f"[{section}]\n" in path.read_text() else path.read_text() + f"\n[{section}]\n{key} = true\n")
    assert config_mod.load(path).click_tracking
    (tmp_path / "smtp").mkdir()
    smtp = write_config(tmp_path / "smtp", backend="smtp")
    assert not config_mod.load(smtp).click_tracking
