"""Tags on subscribers: tagged and untagged by command, shown, in the history, and erased with the person."""

from __future__ import annotations

import json

import pytest

from newsletter import Newsletter


@pytest.fixture
def tagged(run, config_path):
    assert run("subscribers", "add", "ada@example.com", "--list", "weekly").exit_code == 0
    return run


def test_tags_are_added_once_lowercase_shown_and_in_the_history(tagged, config_path):
    result = tagged("subscribers", "tag", "ada@example.com", "VIP", "beta", "vip")
    assert result.exit_code == 0 and "tagged vip, beta" in result.output
    assert "already tagged" in tagged("subscribers", "tag", "ada@example.com", "beta").output
    shown = tagged("subscribers", "show", "ada@example.com").output
    assert "tags:       beta, vip" in shown and "tagged by cli: vip, beta" in shown
    assert "untagged beta" in tagged("subscribers", "untag", "ada@example.com", "beta", "never-had").output
    with Newsletter.from_config(config_path) as nl:
        assert nl.subscribers.get("ada@example.com").tags == ("vip",)
        assert nl.subscribers.record("ada@example.com")["tags"] == ["vip"]


@pytest.mark.parametrize("bad", ["vip;drop table", "-churned", "a" * 65, "tag:x", "é"])
def test_a_tag_that_is_not_a_word_is_one_line_naming_it(tagged, config_path, bad):
    result = tagged("subscribers", "tag", "ada@example.com", "--", "ok", bad)
    assert result.exit_code != 0 and "tag" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    with Newsletter.from_config(config_path) as nl:
        assert nl.subscribers.get("ada@example.com").tags == ()  # nothing half-written


def test_tags_go_when_the_person_is_erased(tagged, config_path):
    assert tagged("subscribers", "tag", "ada@example.com", "vip").exit_code == 0
    assert tagged("subscribers", "remove", "ada@example.com", "--yes").exit_code == 0
    with Newsletter.from_config(config_path) as nl, nl.store.engine.connect() as conn:
        from newsletter.schema import tags

        assert conn.execute(tags.select()).all() == []


def test_an_unknown_subscriber_cannot_be_tagged(tagged):
    result = tagged("subscribers", "tag", "nobody@example.com", "vip")
    assert result.exit_code != 0 and "no subscriber with address 'nobody@example.com'" in result.output


def test_the_json_record_lists_tags(tagged):
    tagged("subscribers", "tag", "ada@example.com", "b", "a")
    record = json.loads(tagged("subscribers", "show", "ada@example.com", "--json").output)
    assert record["tags"] == ["a", "b"]


def test_import_reads_a_tags_column_in_each_tools_shape_and_export_writes_it_back(run, tmp_path, monkeypatch):
    people = tmp_path / "people.csv"
    people.write_text('email,name,tags\nada@example.com,Ada,"VIP; beta"\ngrace@example.org,Grace,"[""beta"",""x""]"\n'
                      'alan@example.com,Alan,\nada@example.com,Ada,"late"\n')
    result = run("subscribers", "import", people, "--list", "weekly")
    assert result.exit_code == 0, result.output
    shown = run("subscribers", "show", "ada@example.com").output
    assert "tags:       beta, late, vip" in shown and "tagged by import" in shown
    mailchimp = tmp_path / "mailchimp.csv"
    mailchimp.write_text('Email Address,First Name,TAGS\nalan@example.com,Alan,"""early"",""beta"""\n')
    assert run("subscribers", "import", mailchimp, "--list", "weekly").exit_code == 0
    assert "tags:       beta, early" in run("subscribers", "show", "alan@example.com").output
    exported = run("subscribers", "export", "--list", "weekly").output
    header, *rows = exported.strip().splitlines()
    assert header.split(",")[:7] == ["email", "name", "status", "subscribed_at", "status_changed_at", "source", "tags"]
    assert any(row.startswith("ada@example.com,") and '"beta,late,vip"' in row for row in rows)
    copy = tmp_path / "copy"
    copy.mkdir()
    from .conftest import write_config

    other = write_config(copy)
    (copy / "export.csv").write_text(exported)
    from click.testing import CliRunner

    from newsletter.cli import cli

    assert CliRunner().invoke(cli, ["--config", str(other), "subscribers", "import", str(copy / "export.csv"),
                                    "--list", "weekly"]).exit_code == 0
    with Newsletter.from_config(other) as nl:
        assert nl.subscribers.get("ada@example.com").tags == ("beta", "late", "vip")


def test_a_row_with_a_bad_tag_is_rejected_alone_naming_its_line(run, tmp_path):
    people = tmp_path / "people.csv"
    people.write_text("email,tags\nada@example.com,ok\ngrace@example.org,bad tag!\n")
    result = run("subscribers", "import", people, "--list", "weekly")
    assert "people.csv:3" in result.output and "tag 'bad tag!'" in result.output
    assert "added 1" in result.output
