"""Email providers: each takes finished messages and returns one result per recipient.

A provider knows neither the store nor the ledger; `send` joins them.
"""

from .base import Envelope, Provider, Recipient, Result

__all__ = ["Envelope", "Provider", "Recipient", "Result"]
