"""Work the web app does after answering: sending the welcome mail to a member who just confirmed."""

from __future__ import annotations

import logging
import threading

from ..app import Newsletter
from ..errors import NewsletterError

log = logging.getLogger("newsletter.web")


class Welcomer:
    """One thread that sends whatever welcome mails are due each time it is woken.

    Confirmations that come while it sends are served by the next pass, so a hundred at once make
    two passes, not a hundred. What it cannot send (the provider away, the process stopped) stays
    pending in the ledger for `send --due` or the scheduler.
    """

    def __init__(self, nl: Newsletter) -> None:
        self.nl = nl
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def wake(self) -> None:
        if not any(declared.onboarding for declared in self.nl.config.lists.values()):
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="welcome", daemon=True)
                self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        """Let a pass in progress finish its batches and stop; wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                line = self.nl.welcome.send_due(stop=self._stop).line
                if line:
                    log.info("%s", line)
            except NewsletterError as exc:
                log.error("welcome mails: %s (they stay pending for `send --due`)", exc)
            except Exception:
                log.exception("welcome mails")
