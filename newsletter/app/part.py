"""What every part of the front door shares: the newsletter it belongs to."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config
    from ..store import Store
    from . import Newsletter


class Part:
    """One domain of `Newsletter`; it reaches the config, the store and the other parts through it."""

    def __init__(self, nl: Newsletter) -> None:
        self._nl = nl

    @property
    def config(self) -> Config:
        return self._nl.config

    @property
    def store(self) -> Store:
        return self._nl.store
