"""The front door, used as a library: no process-wide state, and the send loop's error paths in-process."""

from __future__ import annotations

import re
import signal
import threading

import pytest

from newsletter import Newsletter, consent
from newsletter.config import SendGridSettings
from newsletter.errors import ProviderError, ProviderUnavailable
from newsletter.providers import Envelope, Recipient, Result
from newsletter.providers.sendgrid import SendGridProvider
from newsletter.render import Rendered

from .conftest import ROOT, SECRET, write_config
from .fake_provider import FakeProvider, all_sent
from .fake_sendgrid import FakeSendGrid
from .smtp_server import free_port

SAMPLE = ROOT / "subscribers" / "sample.csv"
EVERYONE = sorted(line.split(",")[0] for line in SAMPLE.read_text().splitlines()[1:])


@pytest.fixture
def fake() -> FakeProvider:
    return FakeProvider(max_batch=5)


@pytest.fixture
def nl(cfg, fake, sample_issue):
    with Newsletter(cfg, provider_factory=fake.factory) as newsletter:
        newsletter.subscribers.import_csv(SAMPLE, "weekly")
        yield newsletter


def test_a_stopped_send_does_not_stop_the_next_one_in_the_same_process(nl, fake, sample_issue):
    stop = threading.Event()
    # Asked to stop once the first batch is recorded (one batch at a time with this provider).
    first = nl.sends.send(sample_issue, "weekly", stop=stop, progress=lambda done, total: stop.set())
    assert first.stopped == "stopped on request" and len(fake.sent) == 5
    assert first.counts["pending"] == 7 and first.counts["in_flight"] == 0
    second = nl.sends.send(sample_issue, "weekly")  # no token: nothing left over from the first send stops it
    assert second.stopped == "" and second.counts["sent"] == 12
    assert sorted(fake.sent) == EVERYONE  # each once
    # A second Newsletter in the same process is just as independent.
    with Newsletter(nl.config, provider_factory=FakeProvider().factory) as other:
        assert other.sends.send(sample_issue, "daily").stopped == ""


def test_a_callable_is_a_stop_token_too(nl, fake, sample_issue):
    report = nl.sends.send(sample_issue, "weekly", stop=lambda: len(fake.batches) >= 2)
    assert report.stopped and report.counts["sent"] == 10 and report.counts["pending"] == 2


def test_library_calls_leave_signal_handlers_alone(nl, sample_issue, run, monkeypatch):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    nl.sends.send(sample_issue, "weekly")
    nl.schedule.due("weekly", issue_path=sample_issue)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    # The CLI installs its handlers for the length of a send and puts the old ones back.
    monkeypatch.setattr("newsletter.app.Newsletter.provider", lambda self, dry_run=False: FakeProvider())
    result = run("send", sample_issue, "--list", "daily", "--yes")
    assert result.exit_code == 0, result.output
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_provider_errors_keep_partial_results_and_leave_the_rest_pending(nl, fake, sample_issue):
    fake.next(all_sent)
    fake.next(ProviderUnavailable("the provider is down", partial=[]))
    with pytest.raises(ProviderUnavailable):
        nl.sends.send(sample_issue, "weekly")
    counts = nl.sends.status(sample_issue, "weekly").counts
    assert (counts["sent"], counts["pending"], counts["in_flight"]) == (5, 7, 0)
    assert nl.sends.send(sample_issue, "weekly").counts["sent"] == 12 and sorted(fake.sent) == EVERYONE


def test_results_per_recipient_are_recorded_as_the_provider_gives_them(nl, fake, sample_issue):
    def mixed(recipients):
        return [Result(r.key, "failed", error="550 no such user") if r.email.startswith("alan") else
                Result(r.key, "unknown", error="timeout") if r.email.startswith("ada") else
                Result(r.key, "sent") for r in recipients]

    fake.next(mixed)
    report = nl.sends.send(sample_issue, "weekly")
    assert (report.counts["sent"], report.counts["failed"], report.counts["unknown"]) == (10, 1, 1)
    assert report.exit_code == 1
    problems = {email: (state, error) for email, state, error, _ in nl.sends.status(sample_issue, "weekly").problems}
    assert problems == {"alan@example.com": ("failed", "550 no such user"), "ada@example.com": ("unknown", "timeout")}


def test_dry_run_of_a_send_under_way_reports_what_is_left(nl, fake, sample_issue, tmp_path):
    nl.sends.send(sample_issue, "weekly", limit=4)
    nl.subscribers.unsubscribe("radia@example.org", "weekly")
    report = nl.sends.dry_run(sample_issue, "weekly", out_dir=tmp_path / "dry", limit=2)
    assert (report.recipients, report.already_sent, report.batches, report.batch_size) == (7, 4, 2, 5)
    assert report.skipped_reasons == {"left the list or suppressed since the send started": 1}
    assert [p.name for p in report.written] == ["2026-12-01-fake.txt"]  # the provider's own preview
    assert nl.sends.status(sample_issue, "weekly").counts["pending"] == 8  # the dry run changed nothing


def test_add_updates_a_known_subscribers_name_and_attributes(nl):
    subscriber, outcome = nl.subscribers.add("ada@example.com", "weekly", name="Augusta Ada King",
                                            attributes={"city": "London"})
    assert outcome == "updated"
    assert subscriber is not None and subscriber.name == "Augusta Ada King"
    assert subscriber.attributes["city"] == "London"
    again = nl.subscribers.add("ada@example.com", "weekly", name="Augusta Ada King")
    assert again[1] == "already present"


def test_smtp_dry_run_writes_eml_files_only(tmp_path, monkeypatch, sample_issue):
    monkeypatch.setenv("NEWSLETTER_SECRET", SECRET)
    with Newsletter.from_config(write_config(tmp_path, backend="smtp")) as nl:
        nl.subscribers.import_csv(SAMPLE, "weekly")
        report = nl.sends.dry_run(sample_issue, "weekly", out_dir=tmp_path / "dry", limit=3)
    assert sorted(p.name for p in report.written) == [f"2026-12-01-00{i}.eml" for i in (1, 2, 3)]
    assert sorted(p.name for p in (tmp_path / "dry").iterdir()) == [p.name for p in report.written]


# -- SendGrid's error paths, against the fake server over real HTTP --------------------------------


def _envelope() -> Envelope:
    rendered = Rendered("s", None, "Hi %%name%%", "", "<p>%%name%%</p>", "%%name%%", 20)  # type: ignore[arg-type]
    return Envelope(rendered, "from@example.com", "", "", "L <l.example.com>", "s")


def _people(n: int, **values: str) -> list[Recipient]:
    return [Recipient(i, f"p{i}@example.com", f"P{i}", {"name": f"P{i}", **values}, f"https://u/{i}") for i in range(n)]


def test_a_connection_that_fails_is_retried(monkeypatch):
    port = free_port()  # nothing listens there until the provider backs off once
    servers: list[FakeSendGrid] = []
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if not servers:
            servers.append(FakeSendGrid("SG.k", port=port).start())

    provider = SendGridProvider(SendGridSettings(api_base=f"http://127.0.0.1:{port}", timeout=5, retry_backoff=0.01),
                                "SG.k", sleep=sleep)
    try:
        results = provider.send(_envelope(), _people(3))
        assert [r.status for r in results] == ["sent"] * 3 and len(waits) == 1
        assert servers[0].received == ["p0@example.com", "p1@example.com", "p2@example.com"]
    finally:
        for server in servers:
            server.stop()


def test_oversized_substitutions_are_refused_before_the_request(sendgrid_server):
    provider = SendGridProvider(SendGridSettings(api_base=sendgrid_server.url, timeout=5), "SG.test-key")
    people = _people(3)
    people[1] = people[1]._replace(values={**people[1].values, "name": "x" * 11_000})
    results = provider.send(_envelope(), people)
    assert [r.status for r in results] == ["sent", "failed", "sent"]
    assert "over SendGrid's 10000" in results[1].error
    # Refused here, not by SendGrid: one request, and it never carried the oversized recipient.
    assert sendgrid_server.requests == 1 and sendgrid_server.received == ["p0@example.com", "p2@example.com"]


def test_a_request_wide_400_stops_the_send_and_fails_nobody(sg_config, sendgrid_server, sample_issue):
    sendgrid_server.answer_next(400, errors=[{"field": "from.email", "message": "The from address does not match "
                                                                                  "a verified Sender Identity."}])
    with Newsletter.from_config(sg_config) as nl:
        nl.subscribers.import_csv(SAMPLE, "weekly")
        with pytest.raises(ProviderError, match=r"SendGrid rejected the request: from\.email: The from address"):
            nl.sends.send(sample_issue, "weekly")
        counts = nl.sends.status(sample_issue, "weekly").counts
    assert (counts["failed"], counts["pending"], counts["sent"]) == (0, 12, 0)
    assert sendgrid_server.requests == 1


# -- embedding, as the README shows it ------------------------------------------------------------


def test_the_readme_embedding_example_sends_an_issue(sg_config, sendgrid_server, sample_issue, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Embedding", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "the README's Embedding section has no Python example"
    lines = [line for line in code.group(1).splitlines() if line.strip()]
    assert len(lines) <= 6, "the example should stay a few lines"
    with Newsletter.from_config(sg_config) as nl:
        nl.subscribers.import_csv(SAMPLE, "weekly")
    monkeypatch.chdir(sg_config.parent)
    exec(compile(code.group(1), "README.md", "exec"), {})  # noqa: S102 - our own README
    assert sorted(sendgrid_server.received) == EVERYONE
    assert "sent 12" in capsys.readouterr().out


def test_consent_table_covers_every_action_and_status():
    for action in consent.ACTIONS:
        assert set(consent.TRANSITIONS[action]) == {None, *consent.STATUSES}, action
    # A person who left is made active by nothing but their own confirmation of a new request.
    for status in consent.LEFT:
        for action in consent.ACTIONS:
            assert consent.decide(action, status).status != consent.ACTIVE, (action, status)
    # Erasure removes every membership; suppression keeps them as a record (the address is kept out).
    assert consent.targets(consent.ERASE) == {consent.REMOVED: consent.STATUSES}
    assert consent.targets(consent.SUPPRESS) == {}
    # And nothing moves a suppressed address towards being mailed.
    for status in (None, *consent.STATUSES):
        for action in (consent.REQUEST, consent.CONFIRM, consent.IMPORT, consent.ADD):
            decision = consent.decide(action, status, suppressed=True)
            assert decision.kept_out and decision.status == status


def test_the_front_door_opens_its_store_lazily_and_closes_it(cfg):
    nl = Newsletter(cfg)
    assert not (cfg.path.parent / "newsletter.db").exists()  # nothing touched until needed
    assert nl.subscribers.counts()["weekly"]["active"] == 0
    nl.close()
    nl.close()  # closing twice is harmless
    assert nl.subscribers.counts()["weekly"]["active"] == 0  # and it reopens on use
    nl.close()
