"""The compatibility check: caniemail's data against the features a rendered issue really uses."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest

from newsletter import Newsletter, compat, content, render
from newsletter.templates import Templates

from .conftest import ROOT
from .issues import thirteen_items


def render_file(cfg, path):
    return render.render(content.load(path, cfg.newsletter), cfg.newsletter, Templates(cfg.templates_dir))


@pytest.mark.parametrize("which", ["sample", "thirteen"])
def test_the_default_template_uses_nothing_unsupported_but_what_mjml_and_the_design_mean_to(cfg, tmp_path, which):
    path = ROOT / "issues" / "2026-12-01.md" if which == "sample" else thirteen_items(tmp_path / "13.md")
    rendered = render_file(cfg, path)
    report = rendered.compatibility
    assert report is not None and report.features_used > 40
    assert report.unexpected == ()
    assert not [w for w in rendered.warnings if "not supported" in w]
    slugs = {finding.slug: finding for finding in report.findings}
    # What Outlook for Windows lacks, MJML covers with conditional comments: listed, and said so.
    assert "Outlook Windows" in slugs["css-at-media"].unsupported and slugs["css-at-media"].on_purpose
    assert "Gmail web" in slugs["css-at-media-prefers-color-scheme"].unsupported
    assert slugs["css-border-radius"].url == "https://www.caniemail.com/features/css-border-radius/"


def test_a_template_feature_unsupported_somewhere_is_a_warning_naming_it_and_the_clients(cfg, tmp_path, sample_issue):
    templates = tmp_path / "templates"
    shutil.copytree(cfg.templates_dir, templates)
    mjml = templates / "issue.mjml"
    mjml.write_text(mjml.read_text().replace(".content p { margin: 0 0 14px; }",
                                             ".content p { margin: 0 0 14px; display: flex; }"))
    rendered = render.render(content.load(sample_issue, cfg.newsletter), cfg.newsletter, Templates(templates))
    (warning,) = [w for w in rendered.warnings if "not supported" in w]
    assert warning.startswith("display:flex is not supported in ") and "Outlook Windows" in warning
    assert warning.endswith("(https://www.caniemail.com/features/css-display-flex/)")


def test_what_the_check_finds_in_html_and_css():
    html = """<!doctype html><html lang="de"><head><meta name="color-scheme" content="light dark">
    <style>/* c */ @media (prefers-color-scheme: dark) { #a > p.x:hover, td + td { color: rgb(1,2,3) !important; } }
    [data-ogsc] * { margin: 1rem; }</style>
    <!--[if mso]><style>.only-outlook { position: absolute; }</style><![endif]-->
    <!--[if !mso]><!--><meta name="referrer" content="no-referrer"><!--<![endif]--></head>
    <body><p style="padding: 2em; background-image: linear-gradient(red, blue)">x</p>
    <a href="mailto:a@example.com">m</a><a href="#top">t</a><img src="https://example.com/a.webp?v=1" alt="">
    <input type="checkbox"></body></html>"""
    found = compat.used(html)
    for expected in [
        ("doctype", ""), ("html-comment", ""), ("css-comment", ""), ("meta", "color-scheme"),
        ("at-rule", "media"), ("media-feature", "prefers-color-scheme"), ("selector", "id"), ("selector", "child"),
        ("selector", "class"), ("selector", "chaining"), ("pseudo", "hover"), ("selector", "adjacent-sibling"),
        ("selector", "grouping"), ("selector", "attribute"), ("selector", "universal"), ("selector", "descendant"),
        ("function", "rgb"), ("keyword", "!important"), ("unit", "rem"), ("unit", "em"),
        ("function", "linear-gradient"), ("property", "background-image"), ("link", "mailto:"), ("link", "#"),
        ("image", "webp"), ("element", "input[checkbox]"), ("attribute", "lang"),
    ]:
        assert expected in found, expected
    # What sits in Outlook's conditional comments is written for Outlook on purpose: not counted;
    # what `<!--[if !mso]><!-->` reveals to every other client is.
    assert ("property", "position") not in found
    assert ("meta", "referrer") in found
    slugs = {finding.slug for finding in compat.check(html).unexpected}
    assert {"image-webp", "html-input-checkbox"} <= slugs and "css-at-media-prefers-color-scheme" not in slugs


def test_the_data_file_carries_its_date_licence_and_clients():
    data = json.loads((ROOT / "newsletter" / "data" / "caniemail.json").read_text(encoding="utf-8"))
    assert data["licence"].startswith("MIT License") and "Permission is hereby granted" in data["licence"]
    assert data["last_update_date"][:4] >= "2024" and data["source"].startswith("caniemail")
    assert data["clients"] == ["Gmail web", "Gmail iOS", "Gmail Android", "Outlook Windows", "Outlook macOS",
                               "Outlook.com", "Apple Mail macOS", "Apple Mail iOS", "Yahoo web"]
    assert len(data["features"]) > 250
    assert compat.data_date() == data["last_update_date"][:10]


def test_the_refresh_script_keeps_the_newest_result_of_each_listed_client_and_the_notes_it_cites():
    spec = importlib.util.spec_from_file_location("refresh", ROOT / "scripts" / "refresh_caniemail.py")
    refresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(refresh)
    upstream = {"last_update_date": "2030-01-02 00:00:00 +0000", "data": [
        {"slug": "css-gap", "title": "gap, column-gap, row-gap", "notes_by_num": {"1": "Only in flex.", "2": "x"},
         "stats": {"outlook": {"windows": {"2013": "y", "2019": "n"}, "macos": {"2016": "a #1"}},
                   "samsung-email": {"android": {"1": "n"}}}},
        {"slug": "html-wbr", "title": "<wbr> element", "stats": {}},
        {"slug": "amp", "title": "AMP for Email", "stats": {}},
    ]}
    out = refresh.compact(upstream, "MIT License\n...", "test")
    gap = out["features"]["css-gap"]
    assert gap["support"] == {"Outlook Windows": "n", "Outlook macOS": "a #1"}  # newest first; unlisted dropped
    assert gap["notes"] == {"1": "Only in flex."}
    assert gap["match"] == [["property", "gap"], ["property", "column-gap"], ["property", "row-gap"]]
    assert out["features"]["html-wbr"]["match"] == [["element", "wbr"]]
    assert "amp" not in out["features"]
    assert out["last_update_date"].startswith("2030-01-02")


def test_render_and_the_dry_run_say_one_line_and_print_the_table_when_asked(run, sample_issue, tmp_path,
                                                                            config_path):
    result = run("render", sample_issue, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Email client support")]
    used = int(line.split(": ")[1].split()[0])
    assert used > 40 and line.endswith(f"{used} features used, 0 unexpected (--compat for the table)"), line
    assert "@media (prefers-color-scheme)" not in result.output and "by design" not in result.output
    result = run("render", sample_issue, "--out", tmp_path / "out", "--compat")
    assert result.exit_code == 0, result.output
    assert "Email client support (caniemail.com data of " in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("@media (prefers-color-scheme)")]
    assert len(lines) == 1 and lines[0].split()[2:5] == ["no", "no", "no"] and "by design" in lines[0]
    with Newsletter.from_config(config_path) as nl:
        nl.subscribers.import_csv(ROOT / "subscribers" / "sample.csv", "weekly")
    result = run("send", sample_issue, "--list", "weekly", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"{used} features used, 0 unexpected" in result.output and "border-radius" not in result.output
    result = run("send", sample_issue, "--list", "weekly", "--dry-run", "--compat")
    assert result.exit_code == 0, result.output
    assert "Email client support" in result.output and "border-radius" in result.output
    result = run("send", sample_issue, "--list", "weekly", "--dry-run", "--json")
    assert json.loads(result.output)["compatibility"]["findings"][0]["on_purpose"]


def test_what_mjmls_own_components_emit_is_by_design(cfg, tmp_path, sample_issue):
    templates = tmp_path / "templates"
    shutil.copytree(cfg.templates_dir, templates)
    mjml = templates / "issue.mjml"
    mjml.write_text(mjml.read_text().replace("{%- for item in items %}", """<mj-section><mj-column>
      <mj-image src="https://example.com/logo.png" alt="Logo" width="120px" href="https://example.com/" />
      <mj-button href="https://example.com/">Read more</mj-button>
      <mj-spacer height="20px" />
      <mj-social><mj-social-element name="github" href="https://github.com/">GitHub</mj-social-element></mj-social>
    </mj-column></mj-section>
    {%- for item in items %}""", 1))
    rendered = render.render(content.load(sample_issue, cfg.newsletter), cfg.newsletter, Templates(templates))
    report = rendered.compatibility
    assert report is not None and report.unexpected == (), [f.slug for f in report.unexpected]
    by_slug = {finding.slug: finding for finding in report.findings}
    for slug in ("css-border-spacing", "css-cursor", "css-float", "html-target"):  # used, and said why
        assert by_slug[slug].unsupported and by_slug[slug].on_purpose
