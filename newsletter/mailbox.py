"""The bounce mailbox, over IMAP (IMAPClient) or POP3 (the standard library's poplib).

IMAP reads by UID without marking anything seen, and moves each message once it has been acted
on: to `processed_folder`, or to `unparsed_folder` when no rule understood it, for a person to
read. Nothing is ever deleted: a move is MOVE where the server has it, else COPY, then the
original flagged deleted and expunged by UID. POP3 has no folders: every message stays on the
server, and its UIDL is what tells a message already read.
"""

from __future__ import annotations

import contextlib
import poplib
import ssl
from collections.abc import Iterator, Sequence
from typing import Protocol

from .config import MailboxSettings
from .errors import InputError


class MailboxError(InputError):
    """The mailbox could not be reached, or refused the login: one line naming it."""


class Mailbox(Protocol):
    name: str  # where it is, for messages and the record of what was read (no password)
    lasting_keys: bool  # a key names its message for good (POP3's UIDL, kept as the record of what was read)

    def pending(self, seen: set[str]) -> list[str]:
        """The keys of the messages to read, oldest first; `seen` are POP3 UIDLs already read."""
        ...

    def fetch(self, keys: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        """Each message's key and raw bytes."""
        ...

    def done(self, keys: Sequence[str], understood: bool) -> None:
        """Put messages away once they have been acted on (and recorded)."""
        ...

    def close(self) -> None: ...


def open_mailbox(settings: MailboxSettings, password: str) -> Mailbox:
    """The configured mailbox, logged in; MailboxError when it cannot be reached or refuses us."""
    if settings.protocol == "pop3":
        return Pop3Mailbox(settings, password)
    return ImapMailbox(settings, password)


def _context() -> ssl.SSLContext:
    return ssl.create_default_context()


class ImapMailbox:
    lasting_keys = False  # UIDs of messages that are moved away once read

    def __init__(self, settings: MailboxSettings, password: str) -> None:
        from imapclient import IMAPClient
        from imapclient.exceptions import IMAPClientError

        self.settings = settings
        self.name = f"imap://{settings.username}@{settings.host}:{settings.port}/{settings.folder}"
        try:
            self.client = IMAPClient(settings.host, settings.port, ssl=settings.security == "ssl",
                                     ssl_context=_context(), timeout=settings.timeout)
            if settings.security == "starttls":
                self.client.starttls(_context())
            self.client.login(settings.username, password)
            self.folders = {understood: self._folder(name) for understood, name in
                            ((True, settings.processed_folder), (False, settings.unparsed_folder))}
            self.client.select_folder(settings.folder)
        except (OSError, IMAPClientError) as exc:
            raise MailboxError(f"the bounce mailbox {self.name} cannot be read: {exc}; check [bounces.mailbox] and "
                               f"${settings.password_env}") from None
        self._move = self.client.has_capability("MOVE")

    def _folder(self, name: str) -> str:
        """`name` ("/" between levels) in the server's own hierarchy, made when it is missing."""
        listing = self.client.list_folders("", "")  # LIST "" "": the server's hierarchy delimiter
        delimiter = listing[0][1] if listing and listing[0][1] else b"/"
        folder = name.replace("/", delimiter.decode() if isinstance(delimiter, bytes) else str(delimiter))
        if not self.client.folder_exists(folder):
            self.client.create_folder(folder)
        return folder

    def pending(self, seen: set[str]) -> list[str]:
        return [str(uid) for uid in sorted(self.client.search(["NOT", "DELETED"]))]

    def fetch(self, keys: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        step = max(1, self.settings.batch)
        for start in range(0, len(keys), step):
            chunk = [int(k) for k in keys[start:start + step]]
            found = self.client.fetch(chunk, ["BODY.PEEK[]"])
            for uid in chunk:
                data = found.get(uid)
                if data is not None:
                    yield str(uid), bytes(data[b"BODY[]"])

    def done(self, keys: Sequence[str], understood: bool) -> None:
        if not keys:
            return
        folder, uids = self.folders[understood], [int(k) for k in keys]
        if self._move:
            self.client.move(uids, folder)
            return
        self.client.copy(uids, folder)  # copied first: a crash here leaves them in both, never in neither
        self.client.add_flags(uids, [b"\\Deleted"])
        self.client.uid_expunge(uids)

    def close(self) -> None:
        from imapclient.exceptions import IMAPClientError

        with contextlib.suppress(OSError, IMAPClientError):  # leaving: the server may be gone already
            self.client.logout()


class Pop3Mailbox:
    lasting_keys = True

    def __init__(self, settings: MailboxSettings, password: str) -> None:
        self.settings = settings
        self.name = f"pop3://{settings.username}@{settings.host}:{settings.port}"
        try:
            if settings.security == "ssl":
                self.client: poplib.POP3 = poplib.POP3_SSL(settings.host, settings.port, context=_context(),
                                                           timeout=settings.timeout)
            else:
                self.client = poplib.POP3(settings.host, settings.port, timeout=settings.timeout)
                if settings.security == "starttls":
                    self.client.stls(_context())
            self.client.user(settings.username)
            self.client.pass_(password)
        except (OSError, poplib.error_proto) as exc:
            raise MailboxError(f"the bounce mailbox {self.name} cannot be read: {exc!s}; check [bounces.mailbox] and "
                               f"${settings.password_env}") from None
        self._numbers: dict[str, int] = {}

    def pending(self, seen: set[str]) -> list[str]:
        _, listing, _ = self.client.uidl()
        for line in listing:
            number, _, uidl = line.decode("ascii", "replace").partition(" ")
            self._numbers[uidl] = int(number)
        return [uidl for uidl in self._numbers if uidl not in seen]

    def fetch(self, keys: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        for key in keys:
            _, lines, _ = self.client.retr(self._numbers[key])
            yield key, b"\r\n".join(lines) + b"\r\n"

    def done(self, keys: Sequence[str], understood: bool) -> None:
        return None  # POP3 has no folders: messages stay, and their UIDLs say they were read

    def close(self) -> None:
        with contextlib.suppress(OSError, poplib.error_proto):  # leaving: the server may be gone already
            self.client.quit()
