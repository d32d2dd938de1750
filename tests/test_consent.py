"""Consent over time: a leaver stays out until they confirm, every change is in the history."""

from __future__ import annotations

import json

import pytest

from newsletter import Newsletter

from .conftest import ROOT

SAMPLE = ROOT / "subscribers" / "sample.csv"


@pytest.fixture
def nl(config_path, store_url):
    """The sample list in a fresh store: SQLite, and PostgreSQL when a server is available.

    The config file itself names the store, so the CLI (the `run` fixture) uses the same one.
    """
    config_path.write_text(config_path.read_text().replace('url = "sqlite:///newsletter.db"', f'url = "{store_url}"'))
    with Newsletter.from_config(config_path) as newsletter:
        newsletter.subscribers.import_csv(SAMPLE, "weekly")
        yield newsletter


def status(nl, email: str) -> str:
    return nl.subscribers.get(email).memberships["weekly"][0]


def test_a_leaver_who_submits_the_form_is_not_made_active_by_a_reimport(nl, run):
    nl.subscribers.unsubscribe("ada@example.com", "weekly")
    request = nl.links.subscribe("ada@example.com", "weekly", "Ada")
    assert request.should_mail and status(nl, "ada@example.com") == "unconfirmed"
    report = nl.subscribers.import_csv(SAMPLE, "weekly")  # a routine re-import of the old list
    assert status(nl, "ada@example.com") == "unconfirmed"
    assert report.kept_out == 1
    line, why = report.kept_out_samples[0]
    assert line == 2 and why.startswith("ada@example.com: they left the list on 20")
    added = run("subscribers", "add", "ada@example.com", "--list", "weekly")
    assert "kept out (they left the list on 20" in added.output and "only their own confirmation" in added.output
    assert status(nl, "ada@example.com") == "unconfirmed"
    # Their own confirmation brings them back, and ends the rule: a later import is just an import.
    from newsletter import tokens

    token = tokens.make_confirm(nl.config.secret(), request.subscriber_id, "weekly", 3600)
    assert nl.links.confirm(token)[1] == "active"
    assert nl.subscribers.import_csv(SAMPLE, "weekly").kept_out == 0 and status(nl, "ada@example.com") == "active"


def test_the_history_records_every_change_with_its_source_and_reason(nl, run):
    nl.subscribers.unsubscribe("grace@example.org", "weekly")
    nl.links.subscribe("grace@example.org", "weekly")
    nl.subscribers.suppress("grace@example.org", "asked by phone")
    nl.subscribers.unsuppress("grace@example.org", "suppressed the wrong address")
    changes = [(h["list"], h["from_status"], h["to_status"], h["source"], h["reason"])
               for h in nl.subscribers.history("grace@example.org")]
    assert changes == [
        ("weekly", None, "active", "import sample.csv", None),
        ("weekly", "active", "unsubscribed", "cli", None),
        ("weekly", "unsubscribed", "unconfirmed", "web", None),
        (None, None, "suppressed", "cli", "asked by phone"),
        (None, "suppressed", "unsuppressed", "cli", "suppressed the wrong address"),
    ]
    shown = run("subscribers", "show", "grace@example.org").output
    assert "list weekly: active -> unsubscribed by cli" in shown
    assert "address: suppressed -> unsuppressed by cli: suppressed the wrong address" in shown


def test_show_json_gives_everything_held_on_the_person(nl, run):
    result = run("subscribers", "show", "ada@example.com", "--json")
    record = json.loads(result.output)
    assert record["email"] == "ada@example.com" and record["name"] == "Ada Lovelace"
    assert record["lists"]["weekly"]["status"] == "active"
    assert record["history"][0]["to_status"] == "active"
    assert set(record) >= {"attributes", "created_at", "suppressed", "deliveries", "events"}


def test_unsuppress_lets_an_address_be_added_again_but_not_an_erased_one(nl, run):
    run("subscribers", "suppress", "new@example.com", "--reason", "typo in a complaint")
    assert "kept out (the address is suppressed)" in run("subscribers", "add", "new@example.com", "--list",
                                                          "weekly").output
    done = run("subscribers", "unsuppress", "new@example.com", "--reason", "wrong address")
    assert done.exit_code == 0
    assert "added" in run("subscribers", "add", "new@example.com", "--list", "weekly").output
    again = run("subscribers", "unsuppress", "new@example.com", "--reason", "x")
    assert again.exit_code == 2 and "is not suppressed" in again.output
    run("subscribers", "remove", "alan@example.com", "--yes")
    erased = run("subscribers", "unsuppress", "alan@example.com", "--reason", "x")
    assert erased.exit_code == 2 and "erased on request" in erased.output


def test_an_old_link_of_an_erased_person_never_acts_for_someone_else(nl, cfg):
    from newsletter import tokens

    first, _ = nl.subscribers.add("zed@example.com", "weekly")
    assert first is not None
    signer = tokens.unsubscribe_signer(nl.config.secret())
    old_link = signer.make(first.id, "weekly", "2026-12-01", tokens.address_tag(first.email))
    pending = nl.links.subscribe("zoe@example.com", "weekly")
    old_confirm = tokens.make_confirm(nl.config.secret(), pending.subscriber_id or 0, "weekly", 3600,
                                      tag=tokens.address_tag("zoe@example.com"))
    nl.subscribers.erase("zed@example.com")
    nl.subscribers.erase("zoe@example.com")
    newcomer, _ = nl.subscribers.add("new@example.com", "weekly")
    late = nl.links.subscribe("late@example.com", "weekly")
    assert newcomer is not None and newcomer.id not in (first.id, pending.subscriber_id)  # ids are never reused
    assert late.subscriber_id not in (first.id, pending.subscriber_id)
    assert nl.links.unsubscribe_target(old_link) is None and nl.links.unsubscribe(old_link) is None  # points at nobody
    assert nl.links.confirm(old_confirm)[1] is None
    assert status(nl, "new@example.com") == "active" and status(nl, "late@example.com") == "unconfirmed"


def test_a_link_made_for_another_address_is_refused(nl):
    from newsletter import tokens
    from newsletter.errors import TokenError

    ada = nl.subscribers.get("ada@example.com")
    forged_for = tokens.unsubscribe_signer(nl.config.secret()).make(ada.id, "weekly", "x",
                                                                    tokens.address_tag("someone@example.com"))
    with pytest.raises(TokenError, match="made for someone else"):
        nl.links.unsubscribe(forged_for)
    assert status(nl, "ada@example.com") == "active"


def test_links_signed_with_a_rotated_secret_keep_working(cfg, monkeypatch, tmp_path):
    from newsletter import config as config_mod, tokens
    from newsletter.errors import TokenError

    with Newsletter(cfg) as nl:
        nl.subscribers.import_csv(SAMPLE, "weekly")
        ada = nl.subscribers.get("ada@example.com")
    old = tokens.unsubscribe_signer(cfg.secret()).make(ada.id, "weekly", "x", tokens.address_tag(ada.email))
    for respelled in (old + "==", old + "A"):  # one token, one spelling: padding or stray bits are refused
        with pytest.raises(TokenError):
            tokens.unsubscribe_signer(cfg.secret()).check(respelled)
    monkeypatch.setenv("NEWSLETTER_SECRET", "a-new-secret-after-rotation")
    with Newsletter(config_mod.load(cfg.path)) as nl, pytest.raises(TokenError):
        nl.links.unsubscribe(old)  # the old secret is not known yet
    cfg.path.write_text(cfg.path.read_text().replace('secret_env = "NEWSLETTER_SECRET"',
                                                     'secret_env = "NEWSLETTER_SECRET"\n'
                                                     'previous_secrets_env = "NEWSLETTER_PREVIOUS_SECRETS"'))
    monkeypatch.setenv("NEWSLETTER_PREVIOUS_SECRETS", "something-older, test-secret-please-change")
    with Newsletter(config_mod.load(cfg.path)) as nl:
        assert nl.links.unsubscribe(old) is not None
        assert nl.subscribers.get("ada@example.com").memberships["weekly"][0] == "unsubscribed"
