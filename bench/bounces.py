"""Fetch and classify bounces from a loopback IMAP server (Debian's Dovecot, as the tests start it).

The sample issue is sent over SMTP (the tests' aiosmtpd server) to `--size` subscribers with VERP
return paths; a report is built around each message it really sent, in the shapes of the tests'
corpus (Postfix, Gmail, Microsoft 365, Exim, qmail, a latin-1 text bounce, ARF, out-of-office;
most return the original's headers only, one in ten the whole message), and appended to the
mailbox. Then `newsletter bounces
fetch` runs once, measured: messages per second, CPU and peak RSS.

    python bench/bounces.py [--size 10000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import ROOT, run_measured, write_config

from tests import bounce_corpus as corpus, dovecot, smtp_server

SHAPES = (corpus.postfix_unknown_user, corpus.gmail_no_such_user, corpus.latin1, corpus.exim_mailbox_full,
          corpus.qmail, corpus.arf, corpus.out_of_office, corpus.microsoft_no_domain)


def headers_only(raw: bytes) -> bytes:
    """The original cut to its headers: what most reports return."""
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n(body cut)\r\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=10_000)
    args = parser.parse_args()
    server = dovecot.Dovecot()
    controller, inbox = smtp_server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            config = write_config(folder)
            config.write_text(config.read_text() + f"""
[provider]
backend = "smtp"
[smtp]
host = "127.0.0.1"
port = {controller.port}
security = "none"
[bounces]
verp_address = "bounces@news.example.com"
[bounces.mailbox]
protocol = "imap"
host = "127.0.0.1"
port = {server.imap_port}
security = "none"
username = "{dovecot.USER}"
""")
            people = folder / "readers.csv"
            people.write_text("email,name\n" + "".join(f"reader{i}@example{i % 97}.com,Reader {i}\n"
                                                       for i in range(args.size)))
            env = {**os.environ, "NEWSLETTER_SECRET": "bench-secret", "BOUNCE_MAILBOX_PASSWORD": dovecot.PASSWORD}
            run_measured(["--config", str(config), "subscribers", "import", str(people), "--list", "weekly"], env)
            run_measured(["--config", str(config), "send", str(ROOT / "issues" / "2026-12-01.md"), "--list",
                          "weekly", "--yes"], env)
            reports = []
            for index, (mail_from, rcpt, message) in enumerate(inbox.messages):
                raw = corpus.with_return_path(message.as_bytes(), mail_from)
                raw = raw if index % 10 == 0 else headers_only(raw)
                reports.append(SHAPES[index % len(SHAPES)](raw, rcpt[0]))
            server.append(reports)
            size = sum(map(len, reports))
            seconds, peak, output, cpu = run_measured(["--config", str(config), "bounces", "fetch"], env)
            print(f"bounces fetch: {len(reports):,} messages ({size / 1e6:,.0f} MB) in {seconds:.1f} s, "
                  f"{len(reports) / seconds:,.0f} messages/s, CPU {cpu:.1f} s, peak RSS {peak:.0f} MB; "
                  f"{output.strip()}", flush=True)
            left = server.folders()
            assert left["INBOX"] == 0, left
    finally:
        controller.stop()
        server.close()


if __name__ == "__main__":
    main()
