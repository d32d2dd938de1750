"""The systemd units of `newsletter init --systemd`: cron's way (a timer running `send --due` every
minute), the scheduler's way (one long-running service), the web app, and the bounce mailbox's timer
when there is one, with this project's paths filled in."""

from __future__ import annotations

import os
from pathlib import Path

from .config import Config
from .errors import InputError

ENVIRONMENT_FILE = "/etc/newsletter.env"  # the secrets: root-owned, mode 600, never in the project


def _word(value: str) -> str:
    """One word of an Exec line, quoted as systemd reads it, with its specifiers (%) escaped."""
    escaped = value.replace("%", "%%")
    if escaped and not any(c in escaped for c in " \t\"'\\;$"):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") + '"'


def _service(description: str, config: Config, command: list[str], arguments: list[str], *,
             oneshot: bool, after_network: bool = True) -> str:
    lines = ["[Unit]", f"Description={description}"]
    if after_network:
        lines += ["Wants=network-online.target", "After=network-online.target"]
    run = " ".join(_word(word) for word in [*command, "--config", str(config.path), *arguments])
    lines += ["", "[Service]"]
    lines += ["Type=oneshot"] if oneshot else ["Restart=on-failure", "KillSignal=SIGTERM", "TimeoutStopSec=120"]
    lines += [f"WorkingDirectory={str(config.root).replace('%', '%%')}",
              f"# {ENVIRONMENT_FILE} holds NEWSLETTER_SECRET=… and the provider's key (root-owned, mode 600)",
              f"EnvironmentFile={ENVIRONMENT_FILE}", f"ExecStart={run}"]
    if not oneshot:
        lines += ["", "[Install]", "WantedBy=multi-user.target"]
    return "\n".join(lines) + "\n"


def _timer(description: str, calendar: str) -> str:
    return "\n".join(["[Unit]", f"Description={description}", "", "[Timer]", f"OnCalendar={calendar}",
                      "Persistent=true", "", "[Install]", "WantedBy=timers.target"]) + "\n"


def units(config: Config, command: list[str]) -> dict[str, str]:
    """Each unit's file name and text; `command` runs newsletter (its absolute path, or python -m)."""
    made = {
        "newsletter-due.service": _service("Send the newsletter issue that is due", config, command, ["send", "--due"],
                                           oneshot=True),
        "newsletter-due.timer": _timer("Check for a due newsletter issue every minute (cron's way)", "minutely"),
        "newsletter-scheduler.service": _service("newsletter scheduler (instead of newsletter-due.timer)", config,
                                                 command, ["scheduler"], oneshot=False),
        "newsletter-web.service": _service("newsletter web app: subscribe, confirm, unsubscribe, webhooks", config,
                                           command, ["serve"], oneshot=False),
    }
    if config.bounces.mailbox.host:
        minutes = max(1, config.bounces.mailbox.every // 60)
        made["newsletter-bounces.service"] = _service("Read the newsletter's bounce mailbox", config, command,
                                                      ["bounces", "fetch"], oneshot=True)
        made["newsletter-bounces.timer"] = _timer("Read the bounce mailbox (cron's way)", f"*:0/{minutes}")
    return made


def write(config: Config, command: list[str], folder: str | os.PathLike[str]) -> list[Path]:
    """Write the units into `folder`; refuses, writing nothing, if any of them is there already."""
    target = Path(folder)
    made = units(config, command)
    for name in made:
        if (target / name).exists() or (target / name).is_symlink():
            raise InputError(f"{target / name}: already exists; remove it, or write the units into another "
                             f"folder with `newsletter init --systemd FOLDER`")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in made.items():
        handle = os.open(target / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        written.append(target / name)
    return written
