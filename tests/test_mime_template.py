"""SMTP's messages built once per issue: each recipient's copy is byte for byte what a fresh build gives."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import re

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from newsletter import Newsletter
from newsletter.ledger import Claimed
from newsletter.providers.base import Envelope, Recipient
from newsletter.providers.mime import POLICY, MessageTemplate, build_message, smtp_data
from newsletter.render import Rendered

from .conftest import ROOT


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The sample issue as a send addresses it, with a template made from it."""
    from .conftest import SECRET, write_config

    folder = tmp_path_factory.mktemp("mime")
    path = write_config(folder, backend="smtp", extra='\n[bounces]\nverp_address = "bounces@example.com"\n'
                                                      'complaint_address = "fbl@example.com"\n')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEWSLETTER_SECRET", SECRET)
        with Newsletter.from_config(path) as nl:
            mailing = nl.sends.mailing(ROOT / "issues" / "2026-12-01.md", "weekly")
            yield mailing, MessageTemplate(mailing.envelope)


def fresh(template: MessageTemplate, recipient: Recipient, date: str, message_id: str) -> bytes:
    return smtp_data(build_message(template.envelope, recipient, date=date, message_id=message_id,
                                   boundary=template.boundary).as_bytes())


DATE = "Tue, 01 Dec 2026 09:00:00 GMT"

_PIECES = st.sampled_from([*"\"'<>&;,.=%@()[]:\\ \t", "%%name%%", "=?utf-8?q?x?=", "..", "\u2028", "—", "Zoë"])
_NAMES = st.lists(st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8) | _PIECES,
                  max_size=12).map("".join)
_LOCALS = st.from_regex(r"[a-z0-9][a-z0-9.+_-]{0,30}", fullmatch=True).filter(lambda s: ".." not in s and s[-1] != ".")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=_NAMES, local=_LOCALS, sid=st.integers(1, 10**12), city=_NAMES)
def test_every_recipients_copy_is_byte_for_byte_a_fresh_build(sample, name, local, sid, city):
    mailing, template = sample
    recipient = mailing.recipient(Claimed(sid, f"{local}@example.com", name, "{}"))
    message_id = f"<{sid}.1@example.com>"
    made = template.data(recipient, date=DATE, message_id=message_id)
    assert made is not None
    data, read_id = made
    assert data == fresh(template, recipient, DATE, message_id)
    assert read_id == message_id
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    body = re.sub(rb"(?m)^\.\.", b".", data.split(b"\r\n\r\n", 1)[1])  # as the server reads it back
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # quoted-printable's limit


def test_hostile_values_land_escaped_and_on_their_lines_like_a_fresh_build():
    html = ("<p>Hello %%name|there%%,</p>\n<p>.</p>\n.lead %%attr.city%%\n" + "x" * 200 + " %%email%%  \n"
            "<a href=\"%%unsubscribe_url%%\">leave</a> =3D %%attr.city|=?%%")
    text = "Hello %%name|there%%,\n.\n..%%attr.city%%\t\n" + "y" * 150 + "%%email%%\nno newline at the end %%name%%"
    envelope = Envelope(Rendered("s", dt.date(2026, 12, 1), "Hi %%name%%", "", html, text, len(html)),
                        "from@example.com", "The Sender", "", "L <l.example.com>", "s",
                        custom_args={"issue": "s", "list": "l"})
    template = MessageTemplate(envelope)
    for name, city in (("<b>&amp;</b>", ".\n.\r\n."), ("O'Brien \"Jo\"", "=" * 90), ("", "%%name%%"),
                       ("Ünïcödé Ñame", "é" * 100)):
        values = {"name": name, "email": "p@example.com", "unsubscribe_url": "https://u/1?a=1&b=2",
                  "view_url": "", "attr.city": city}
        recipient = Recipient(1, "p@example.com", name, values, "https://u/1?a=1&b=2", {"subscriber": "1"})
        data, _ = template.data(recipient, date=DATE, message_id="<m@example.com>")
        assert data == fresh(template, recipient, DATE, "<m@example.com>")
        parsed = email.message_from_bytes(re.sub(rb"(?m)^\.\.", b".", data), policy=email.policy.default)
        assert parsed.get_body(("plain",)).get_content().splitlines()[0] == f"Hello {name or 'there'},"


def test_a_copy_is_a_fresh_build_for_what_the_template_cannot_make(sample):
    mailing, template = sample
    utf8 = mailing.recipient(Claimed(7, "zoë@example.com", "Zoë", "{}"))
    assert template.data(utf8) is None  # an address that needs SMTPUTF8 goes through the email package
    envelope = Envelope(Rendered("s", dt.date(2026, 12, 1), "Hi", "", "<p>a</p>\r\n<p>b</p>", "a\r\nb", 20),
                        "from@example.com", "", "", "L <l.example.com>", "s")
    assert MessageTemplate(envelope).data(mailing.recipient(Claimed(8, "p@example.com", "P", "{}"))) is None


def test_the_date_and_message_id_are_made_for_each_copy(sample):
    mailing, template = sample
    recipient = mailing.recipient(Claimed(9, "nine@example.com", "Nine", "{}"))
    first, second = template.data(recipient), template.data(recipient)
    assert first is not None and second is not None and first[1] != second[1]
    parsed = email.message_from_bytes(first[0], policy=email.policy.default)
    assert parsed["Message-ID"] == first[1] and parsed["Date"].datetime.tzinfo is not None
    assert parsed["To"] == "Nine <nine@example.com>"
    assert parsed["List-Unsubscribe"].startswith("<https://news.example.com/unsubscribe/9-")
    assert parsed["X-Newsletter-Subscriber"] == "9" and parsed["CFBL-Address"] == "fbl@example.com; report=arf"


_HEADER_TEXT = st.lists(st.sampled_from([*"aZ09 .-_+<>@:;,\"'()[]\\=?!~\t", "  ", "=?", "é", "\u2028"]) |
                        st.text(st.characters(codec="ascii"), max_size=3), max_size=40).map("".join)


@settings(max_examples=500, deadline=None)
@given(name=st.sampled_from(["To", "Message-ID", "Subject", "List-Unsubscribe", "X-Newsletter-Subscriber"]),
       value=_HEADER_TEXT | st.from_regex(r"[A-Za-z0-9]{1,8}( [A-Za-z0-9]{1,8}){0,2} <[a-z0-9.+_-]{1,12}@[a-z0-9-]{1,8}"
                                          r"(\.[a-z0-9-]{1,5}){1,2}>", fullmatch=True)
       | st.from_regex(r"<[a-z0-9.+_-]{1,12}@[a-z0-9.-]{1,12}>", fullmatch=True),
       pad=st.sampled_from([0, 900, 955, 970]))
def test_a_personal_header_is_written_as_the_email_package_writes_it(sample, name, value, pad):
    """Whether a copy's own header is written directly or through the email package, it is the same
    bytes and reads back as the same value."""
    _mailing, template = sample
    value = value.replace("<", "<" + "x" * pad, 1) if pad and "<" in value else value
    policy = POLICY
    try:
        stored = policy.header_store_parse(name, value)
        expected = policy.fold_binary(*stored), str(stored[1])
    except Exception as exc:  # noqa: BLE001 - what the email package refuses, the direct path must not take
        with pytest.raises(type(exc)):
            template._header(name, value, True)
        return
    assert template._header(name, value, True) == expected


_ENCODED_WORD = re.compile(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=")
_SUBJECTS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"), exclude_characters="%"),
                    min_size=1, max_size=150).filter(lambda s: s.strip() == s and "  " not in s and not s.isascii())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(subject=_SUBJECTS | st.sampled_from(["Die Pipeline Woche #48: idempotente Übertragung, MJML & die 102-KB-Grenze",
                                            "日本語のニュースレター第48号 一度だけ送る MJML 102KBの制限について",
                                            "a" * 200 + "é"]))
def test_a_subject_that_needs_encoded_words_gets_words_of_at_most_75_characters_one_to_a_line(sample, subject):
    mailing, _template = sample
    envelope = dataclasses.replace(mailing.envelope, rendered=dataclasses.replace(mailing.envelope.rendered,
                                                                                  subject=subject))
    template = MessageTemplate(envelope)
    recipient = mailing.recipient(Claimed(7, "reader@example.com", "Reader", "{}"))
    made = template.data(recipient, date=DATE, message_id="<7.1@example.com>")
    assert made is not None and made[0] == fresh(template, recipient, DATE, "<7.1@example.com>")
    head = made[0].split(b"\r\n\r\n", 1)[0].decode("ascii")
    lines = re.search(r"(?m)^Subject: [^\r\n]*(?:\r\n[ \t][^\r\n]*)*", head).group().split("\r\n")  # type: ignore[union-attr]
    assert all(len(line) <= 76 for line in lines), lines
    words = _ENCODED_WORD.findall("\r\n".join(lines))
    assert words and all(len(word) <= 75 for word in words), words
    assert email.message_from_bytes(made[0], policy=email.policy.default)["Subject"] == subject
