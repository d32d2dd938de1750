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
        self.connections = 0
        self.drop_after: int | None = None  # close the connection after this many messages
        self.hang_up_on: str = ""  # close the connection instead of answering DATA for this recipient

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.startswith("refuse"):
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.hang_up_on in envelope.rcpt_tos:
            server.transport.close()  # the message arrived, but its sender never hears so
            return "250 never sent"
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        if self.drop_after and len(self.messages) % self.drop_after == 0:
            # Hang up right after accepting, as servers with a per-connection message limit do.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return "250 Message accepted"


class CountingController(Controller):
    def factory(self):  # type: ignore[no-untyped-def]
        self.handler.connections += 1
        return super().factory()


def start() -> tuple[CountingController, Inbox]:
    inbox = Inbox()
    controller = CountingController(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    inbox.connections = 0  # start() opens one connection of its own to check the server is up
    return controller, inbox
