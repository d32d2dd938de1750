"""Email address checks: trimmed, domain lower-cased and IDNA-encoded, validated by email-validator.

email-validator costs about 25 µs an address, too slow for a million-row import, so the common
case (an ASCII dot-atom local part) is checked by a strict pattern and its domain by
email-validator once per domain (cached). Anything else goes through email-validator whole.
A test checks that both paths agree.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

from .errors import InputError

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM_LOCAL = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
MAX_LOCAL = 64
MAX_ADDRESS = 254


@dataclass(frozen=True)
class Address:
    email: str  # as stored and mailed: local part as given, domain lower-case ASCII (IDNA)
    key: str  # lower-case: what uniqueness and suppression compare

    @property
    def hash(self) -> str:
        return hash_key(self.key)


def hash_key(key: str) -> str:
    """The SHA-256 of a lower-cased address: what remains of an erased subscriber."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=65536)
def _domain(domain: str) -> str | None:
    from email_validator import EmailNotValidError, validate_email  # here: most commands never check an address

    try:
        return validate_email(f"a@{domain}", check_deliverability=False).ascii_domain
    except EmailNotValidError:
        return None


def _full(text: str) -> Address:
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InputError(f"invalid address {text!r}: {exc}") from None
    email = f"{result.local_part}@{result.ascii_domain}"
    return Address(email=email, key=email.lower())


def normalize(raw: str) -> Address:
    """Check and normalise one address; InputError says why it is not one."""
    text = raw.strip()
    if not text:
        raise InputError("empty address")
    if "\r" in text or "\n" in text:
        raise InputError(f"invalid address {text!r}: contains a line break")
    local, at, domain = text.rpartition("@")
    octets = len(local.encode("utf-8", "surrogatepass"))
    if octets > MAX_LOCAL:  # RFC 5321 4.5.3.1.1; email-validator lets longer ones through
        raise InputError(f"invalid address {text!r}: the part before the @ is {octets} octets; at most {MAX_LOCAL}")
    if at and _DOT_ATOM_LOCAL.fullmatch(local):
        ascii_domain = _domain(domain)
        if ascii_domain is not None:
            email = f"{local}@{ascii_domain}"
            if len(email) <= MAX_ADDRESS:
                return Address(email=email, key=email.lower())
    return _full(text)
