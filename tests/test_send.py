import email
import email.policy
import json

import pytest

from newsletter import config as config_mod, tokens
from newsletter.ledger import Ledger
from newsletter.store import Store
from newsletter.templates import Templates

from .conftest import ROOT, SECRET, SHARED
from .test_store import dump

SAMPLE = ROOT / "subscribers" / "sample.csv"


@pytest.fixture
def issue(sample_issue):
    return sample_issue


@pytest.fixture
def imported(sg_run):
    result = sg_run("subscribers", "import", SAMPLE, "--list", "weekly")
    assert "added 12" in result.output
    return 12


def states(config_path) -> dict:
    cfg = config_mod.load(config_path)
    with Store(cfg) as store:
        return Ledger(store, "2026-12-01", "weekly").counts()


def test_send_delivers_each_recipient_once_with_personal_values(sg_run, sg_config, sendgrid_server, issue, imported):
    result = sg_run("send", issue, "--list", "weekly", "--yes")
    assert result.exit_code == 0, result.output
    assert "this run sent 12" in result.output
    assert sorted(sendgrid_server.received) == sorted(
        line.split(",")[0] for line in SAMPLE.read_text().splitlines()[1:])
    body = sendgrid_server.bodies[0]
    assert body["categories"] == ["2026-12-01"]
    assert body["headers"]["List-Id"] == "Test Weekly <weekly.news.example.com>"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["reply_to"] == {"email": "editor@example.com"}
    signer = tokens.unsubscribe_signer(SECRET.encode())
    for p in body["personalizations"]:
        args = p["custom_args"]
        assert set(args) == {"issue", "list", "subscriber"} and all(isinstance(v, str) for v in args.values())
        url = p["headers"]["List-Unsubscribe"]
        assert url.startswith("<https://news.example.com/unsubscribe/") and url.endswith(">")
        claims = signer.check(url[1:-1].rsplit("/", 1)[1])
        claimed = (str(claims.subscriber_id), claims.list_name, claims.extra)
        assert claimed == (args["subscriber"], "weekly", "2026-12-01")
        assert p["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        # Both links are written out in the content but for the token, which the preference page shares.
        assert p["substitutions"]["%%link_token%%"] == url[1:-1].rsplit("/", 1)[1]
        # No value in this request needs HTML escaping, so both parts share one key per placeholder.
        assert set(p["substitutions"]) == {"%%name|there%%", "%%email%%", "%%link_token%%"}
    ada = next(p for p in body["personalizations"] if p["to"][0]["email"] == "ada@example.com")
    assert ada["to"][0]["name"] == "Ada Lovelace" and ada["substitutions"]["%%name|there%%"] == "Ada Lovelace"
    assert "%%name|there%%" in body["content"][1]["value"] and "%%name|there%%" in body["content"][0]["value"]
    for part in body["content"]:
        assert "https://news.example.com/unsubscribe/%%link_token%%" in part["value"]
        assert "https://news.example.com/preferences/%%link_token%%" in part["value"]
    assert states(sg_config)["sent"] == 12
    # A second run continues where the first stopped: nothing is left, nothing is sent again.
    again = sg_run("send", issue, "--list", "weekly", "--yes")
    assert again.exit_code == 0 and "nothing to send" in again.output
    assert len(sendgrid_server.received) == 12


def test_request_bodies_match_sendgrids_openapi_schema(sg_run, sendgrid_server, issue, imported, tmp_path):
    spec_path = SHARED / "sendgrid" / "tsg_mail_v3.json"
    if not spec_path.exists():
        pytest.skip(f"{spec_path} is absent: cannot check request bodies against SendGrid's OpenAPI description")
    import jsonschema

    spec = json.loads(spec_path.read_text())
    schema = spec["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"]["schema"]
    root = {**schema, "components": spec["components"]}
    validator = jsonschema.Draft202012Validator(root)
    sg_run("subscribers", "add", "eve@example.com", "--list", "weekly", "--name", "Eve <b>&</b>\r\nBcc: x@y.z")
    sg_run("send", issue, "--list", "weekly", "--to", "me@example.com")
    assert sg_run("send", issue, "--list", "weekly", "--yes").exit_code == 0
    assert len(sendgrid_server.bodies) == 2
    for body in sendgrid_server.bodies:
        errors = sorted(validator.iter_errors(body), key=str)
        assert not errors, errors[0].message


def test_html_and_text_values_are_escaped_separately(sg_run, sendgrid_server, issue):
    sg_run("subscribers", "add", "eve@example.com", "--list", "weekly", "--name", "<script>x</script> & Co")
    assert sg_run("send", issue, "--list", "weekly", "--yes").exit_code == 0
    body = sendgrid_server.bodies[0]
    subs = body["personalizations"][0]["substitutions"]
    assert subs["%%name|there%%"] == "&lt;script&gt;x&lt;/script&gt; &amp; Co"
    assert subs["%%name|there:t%%"] == "<script>x</script> & Co"
    assert "%%name|there:t%%" in body["content"][0]["value"] and "%%name|there:t%%" not in body["content"][1]["value"]
    assert "%%email%%" in body["content"][0]["value"]  # email needed no escaping: shared key


def test_dry_run_changes_nothing_needs_no_key_and_writes_samples(sg_run, sg_config, sendgrid_server, issue, imported,
                                                                 tmp_path, monkeypatch):
    cfg = config_mod.load(sg_config)
    before = dump(cfg)
    monkeypatch.delenv("SENDGRID_API_KEY")
    out = tmp_path / "dry"
    result = sg_run("send", issue, "--list", "weekly", "--dry-run", "--out", out)
    assert result.exit_code == 0, result.output
    assert "recipients:   12 in 1 batches" in result.output
    assert dump(cfg) == before
    assert sendgrid_server.requests == 0
    emls = sorted(out.glob("*.eml"))
    assert len(emls) == 3
    msg = email.message_from_bytes(emls[0].read_bytes(), policy=email.policy.default)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    body = json.loads((out / "2026-12-01-sendgrid-request.json").read_text())
    assert len(body["personalizations"]) == 12
    assert "SG.test-key" not in result.output


def test_dry_run_reports_skips(sg_run, issue, imported):
    sg_run("subscribers", "unsubscribe", "ada@example.com", "--list", "weekly")
    sg_run("subscribers", "suppress", "grace@example.org", "--reason", "complaint")
    result = sg_run("send", issue, "--list", "weekly", "--dry-run")
    assert "recipients:   10" in result.output
    assert "1 unsubscribed" in result.output and "1 suppressed" in result.output


def test_rate_limit_waits_until_reset_then_sends(sendgrid_server, monkeypatch):
    import time

    from newsletter.config import SendGridSettings
    from newsletter.providers.base import Envelope, Recipient
    from newsletter.providers.sendgrid import SendGridProvider
    from newsletter.render import Rendered

    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-key")
    waits: list[float] = []
    settings = SendGridSettings(api_base=sendgrid_server.url, timeout=5, retry_backoff=0.01)
    provider = SendGridProvider(settings, "SG.test-key",
                                sleep=waits.append)
    rendered = Rendered("s", None, "Hi %%name%%", "", "<p>%%name%%</p>", "%%name%%", 20)  # type: ignore[arg-type]
    envelope = Envelope(rendered, "from@example.com", "", "", "L <l.example.com>", "s")
    people = [Recipient(i, f"p{i}@example.com", f"P{i}", {"name": f"P{i}"}, f"https://u/{i}") for i in range(3)]
    sendgrid_server.answer_next(429, {"X-RateLimit-Reset": str(int(time.time()) + 30)})
    sendgrid_server.answer_next(429)  # no reset header: exponential back-off with jitter
    results = provider.send(envelope, people)
    assert [r.status for r in results] == ["sent"] * 3
    assert 28 <= waits[0] <= 31  # waited for the reset time
    assert 0.005 <= waits[1] <= 0.02  # retry_backoff * 2 ** 1 * jitter(0.5..1)
    assert sendgrid_server.received == [p.email for p in people]


def test_server_errors_retry_then_leave_batch_pending(sg_run, sg_config, sendgrid_server, issue, imported):
    sendgrid_server.answer_next(500, times=2)
    assert sg_run("send", issue, "--list", "weekly", "--yes").exit_code == 0
    assert len(sendgrid_server.received) == 12


def test_persistent_server_errors_exit_1_and_keep_pending(sg_run, sg_config, sendgrid_server, issue, imported):
    sendgrid_server.answer_next(500, times=3)
    result = sg_run("send", issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1
    assert "SendGrid failed 3 times" in result.output and "stays pending" in result.output
    assert states(sg_config)["pending"] == 12 and sendgrid_server.received == []
    assert sg_run("send", issue, "--list", "weekly", "--yes").exit_code == 0
    assert len(sendgrid_server.received) == 12


def test_bad_request_isolates_the_named_recipient(sg_run, sg_config, sendgrid_server, issue, imported):
    sendgrid_server.reject["alan@example.com"] = "Does not contain a valid address."
    result = sg_run("send", issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1
    assert sorted(sendgrid_server.received) == sorted(
        line.split(",")[0] for line in SAMPLE.read_text().splitlines()[1:] if not line.startswith("alan"))
    counts = states(sg_config)
    assert (counts["sent"], counts["failed"]) == (11, 1)
    status = sg_run("status", issue, "--list", "weekly")
    assert "failed: alan@example.com" in status.output and "Does not contain a valid address" in status.output


def test_unauthorized_stops_without_marking_failed(sg_run, sg_config, sendgrid_server, issue, imported, monkeypatch):
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong-secret-key")
    result = sg_run("send", issue, "--list", "weekly", "--yes")
    assert result.exit_code == 2
    assert "SendGrid refused the API key (401" in result.output and "SENDGRID_API_KEY" in result.output
    assert "SG.wrong-secret-key" not in result.output
    counts = states(sg_config)
    assert counts["failed"] == 0 and counts["pending"] == 12


def test_payload_too_large_splits_batch(sg_run, sendgrid_server, issue, imported, tmp_path):
    sg_run("send", issue, "--list", "weekly", "--dry-run", "--out", tmp_path / "dry")
    full = json.loads((tmp_path / "dry" / "2026-12-01-sendgrid-request.json").read_text())
    one = {**full, "personalizations": full["personalizations"][:1]}
    # Room for about half the recipients: the batch must be split to get through.
    sendgrid_server.max_body = (len(json.dumps(full)) + len(json.dumps(one))) // 2
    assert sg_run("send", issue, "--list", "weekly", "--yes").exit_code == 0
    assert sorted(set(sendgrid_server.received)) == sorted(sendgrid_server.received)
    assert len(sendgrid_server.received) == 12 and len(sendgrid_server.bodies) > 1


def test_timeout_after_sending_is_unknown_and_not_resent(sg_run, sg_config, sendgrid_server, issue, imported):
    sendgrid_server.stall = 3  # past the client's 2 s timeout; the server did accept the request
    result = sg_run("send", issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1
    assert "UNKNOWN: 12 messages" in result.output
    assert states(sg_config)["unknown"] == 12
    sendgrid_server.stall = 0
    again = sg_run("send", issue, "--list", "weekly", "--yes")
    assert "nothing to send" in again.output and len(sendgrid_server.received) == 12
    assert "unknown 12" in sg_run("status", issue, "--list", "weekly").output
    resent = sg_run("send", issue, "--list", "weekly", "--yes", "--resend-unknown")
    assert resent.exit_code == 0 and len(sendgrid_server.received) == 24
    assert states(sg_config)["sent"] == 12


def test_leavers_mid_send_are_skipped_and_joiners_not_added(sg_run, sg_config, sendgrid_server, issue, imported):
    first = sg_run("send", issue, "--list", "weekly", "--yes", "--limit", "4")
    assert first.exit_code == 3 and "--limit 4 reached with 8 pending" in first.output
    assert len(sendgrid_server.received) == 4 and states(sg_config)["pending"] == 8
    sg_run("subscribers", "unsubscribe", "radia@example.org", "--list", "weekly")
    sg_run("subscribers", "suppress", "ken@example.com", "--reason", "bounced elsewhere")
    sg_run("subscribers", "remove", "frances@example.org", "--yes")
    sg_run("subscribers", "add", "late@example.com", "--list", "weekly")
    assert sg_run("send", issue, "--list", "weekly", "--yes").exit_code == 0
    received = set(sendgrid_server.received)
    assert len(sendgrid_server.received) == len(received) == 9
    assert not received & {"radia@example.org", "ken@example.com", "frances@example.org", "late@example.com"}
    counts = states(sg_config)
    assert (counts["sent"], counts["skipped"]) == (9, 3)


def test_test_copy_is_marked_and_not_recorded(sg_run, sg_config, sendgrid_server, issue, imported):
    result = sg_run("send", issue, "--list", "weekly", "--to", "ada@example.com")
    assert result.exit_code == 0 and "test copy to ada@example.com: sent" in result.output
    p = sendgrid_server.bodies[0]["personalizations"][0]
    assert p["subject"].startswith("[TEST] ") and p["custom_args"]["test"] == "1"
    assert p["substitutions"]["%%name|there%%"] == "Ada Lovelace"
    cfg = config_mod.load(sg_config)
    with Store(cfg) as store:
        assert not Ledger(store, "2026-12-01", "weekly").started()


def test_send_refuses_without_secret_or_yes(sg_run, issue, imported, monkeypatch):
    no_yes = sg_run("send", issue, "--list", "weekly")
    assert no_yes.exit_code == 2 and "pass --yes" in no_yes.output
    monkeypatch.delenv("NEWSLETTER_SECRET")
    result = sg_run("send", issue, "--list", "weekly", "--yes")
    assert result.exit_code == 2 and "NEWSLETTER_SECRET is not set" in result.output


def test_unknown_list_for_send(sg_run, issue):
    result = sg_run("send", issue, "--list", "nope", "--dry-run")
    assert result.exit_code == 2 and "unknown list 'nope'" in result.output


def test_max_rate_paces_batches(sg_config, sendgrid_server, issue, imported):
    from newsletter import content, render
    from newsletter.providers.sendgrid import SendGridProvider
    from newsletter.send import Mailing, send

    cfg = config_mod.load(sg_config)
    rendered = render.render(content.load(issue, cfg.newsletter), cfg.newsletter, Templates(cfg.templates_dir))
    waits: list[float] = []
    with Store(cfg) as store:
        provider = SendGridProvider(cfg.sendgrid, "SG.test-key")
        report = send(store, Mailing(cfg, rendered, "weekly"), provider, max_rate=4,
                      sleep=waits.append)
    assert report.this_run["sent"] == 12
    # Batches no larger than a second's worth.
    assert [len(b["personalizations"]) for b in sendgrid_server.bodies] == [4, 4, 4]
    # Before each batch after the first, it waits until the rate allows it: ~1 s, then ~2 s after the start.
    assert len(waits) == 2 and 0.5 < waits[0] <= 1.0 and waits[1] > 0.5


def test_provider_failure_mid_send_leaves_nothing_in_flight(sg_config, sendgrid_server, issue, imported, sg_run):
    config_text = sg_config.read_text().replace("batch_size = 1000", "batch_size = 4")
    sg_config.write_text(config_text + "\n[send]\nconcurrency = 1\n")  # one batch at a time: a fixed order
    sendgrid_server.answer_next(202)  # the first batch goes through...
    sendgrid_server.answer_next(500, times=3)  # ...then the provider fails for good
    result = sg_run("send", issue, "--list", "weekly", "--yes")
    assert result.exit_code == 1 and "stays pending" in result.output
    counts = states(sg_config)
    # The failed batch and the one claimed behind it are pending again; nothing is in flight or unknown.
    assert (counts["sent"], counts["pending"], counts["in_flight"], counts["unknown"]) == (4, 8, 0, 0)
    assert sg_run("send", issue, "--list", "weekly", "--yes").exit_code == 0
    assert sorted(sendgrid_server.received) == sorted(set(sendgrid_server.received))
    assert len(sendgrid_server.received) == 12


def test_tracking_is_decided_in_every_request_and_spares_the_unsubscribe_link(sg_run, sg_config, sendgrid_server,
                                                                              issue, imported):
    assert sg_run("send", issue, "--list", "weekly", "--to", "me@example.com").exit_code == 0
    body = sendgrid_server.bodies[-1]
    # Off by default, whatever the account's own settings say.
    assert body["tracking_settings"] == {"click_tracking": {"enable": False, "enable_text": False},
                                         "open_tracking": {"enable": False}}
    html = body["content"][1]["value"]
    for path in ("unsubscribe", "preferences"):  # even when click tracking is on
        assert f'<a href="https://news.example.com/{path}/%%link_token%%" clicktracking="off"' in html
    sg_config.write_text(sg_config.read_text().replace("[sendgrid]", "[sendgrid]\nopen_tracking = true\n"
                                                                     "click_tracking = true"))
    assert sg_run("send", issue, "--list", "weekly", "--to", "me@example.com").exit_code == 0
    assert sendgrid_server.bodies[-1]["tracking_settings"] == {
        "click_tracking": {"enable": True, "enable_text": False}, "open_tracking": {"enable": True}}


def test_list_unsubscribe_offers_a_mailto_when_configured(sg_run, sg_config, sendgrid_server, issue, imported,
                                                          tmp_path):
    sg_config.write_text(sg_config.read_text().replace('secret_env = "NEWSLETTER_SECRET"',
                                                       'secret_env = "NEWSLETTER_SECRET"\n'
                                                       'unsubscribe_mailto = "leave@example.com"'))
    dry = tmp_path / "dry"
    assert sg_run("send", issue, "--list", "weekly", "--dry-run", "--out", dry).exit_code == 0
    eml = email.message_from_bytes(sorted(dry.glob("*.eml"))[0].read_bytes(), policy=email.policy.default)
    assert sg_run("send", issue, "--list", "weekly", "--yes").exit_code == 0
    header = sendgrid_server.bodies[0]["personalizations"][0]["headers"]["List-Unsubscribe"]
    for value in (header, str(eml["List-Unsubscribe"])):
        assert value.startswith("<mailto:leave@example.com?subject=unsubscribe>, <https://news.example.com/unsubscribe/")


def test_an_empty_value_takes_the_placeholders_default(sg_run, sendgrid_server, issue):
    sg_run("subscribers", "add", "noname@example.com", "--list", "weekly")
    sg_run("subscribers", "add", "named@example.com", "--list", "weekly", "--name", "Named <Reader>")
    assert sg_run("send", issue, "--list", "weekly", "--yes").exit_code == 0
    subs = {p["to"][0]["email"]: p["substitutions"] for p in sendgrid_server.bodies[0]["personalizations"]}
    assert subs["noname@example.com"]["%%name|there%%"] == "there"  # "Hello there,", not "Hello ,"
    assert subs["named@example.com"]["%%name|there%%"] == "Named &lt;Reader&gt;"
