"""A real SMTP server (aiosmtpd) on loopback that keeps what it receives."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
from email.message import EmailMessage

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.raw: list[bytes] = []  # each message as it arrived
        self.connections = 0
        self.drop_after: int | None = None  # close the connection after this many messages
        self.hang_up_on: str = ""  # close the connection instead of answering DATA for this recipient
        self.delay = 0.0  # seconds before each reply to MAIL, RCPT and DATA, as a distant relay
        self.throttle_after: int | None = None  # per connection: answer 421 and hang up after this many messages
        self.greylist = False  # answer 451 to an address's first RCPT, as greylisting relays do
        self.always_busy = False  # answer 451 to every RCPT
        self.pipelining = False  # advertise PIPELINING
        self.seen: set[str] = set()
        self.keep = True  # parse and keep each message; a benchmark only counts them
        self.count = 0
        self.per_session: dict[int, int] = {}

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        await asyncio.sleep(self.delay)
        if self.throttle_after and self.per_session.get(id(session), 0) >= self.throttle_after:
            asyncio.get_running_loop().call_soon(server.transport.close)
            return "421 4.7.0 Too many messages on this connection, closing"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        await asyncio.sleep(self.delay)
        if address.startswith("refuse"):
            return "550 5.1.1 mailbox unavailable"
        if self.always_busy or (self.greylist and address not in self.seen):
            self.seen.add(address)
            return "451 4.7.1 Greylisted, please try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        await asyncio.sleep(self.delay)
        self.per_session[id(session)] = self.per_session.get(id(session), 0) + 1
        self.count += 1
        if not self.keep:
            return "250 Message accepted"
        if self.hang_up_on in envelope.rcpt_tos:
            server.transport.close()  # the message arrived, but its sender never hears so
            return "250 never sent"
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        self.raw.append(envelope.original_content or envelope.content)
        if self.drop_after and len(self.messages) % self.drop_after == 0:
            # Hang up right after accepting, as servers with a per-connection message limit do.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 Message accepted"


class CountingController(Controller):
    def factory(self):  # type: ignore[no-untyped-def]
        self.handler.connections += 1
        return super().factory()


def start(*, smtputf8: bool = False) -> tuple[CountingController, Inbox]:
    inbox = Inbox()
    controller = CountingController(inbox, hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=smtputf8)
    controller.start()
    inbox.connections = 0  # start() opens one connection of its own to check the server is up
    return controller, inbox
