"""Load and check `config.toml`.

Every key is declared once, as a dataclass field; unknown keys, wrong types and missing required
keys are one-line errors naming the file and the key, so a typo never passes silently.
Secrets are never read from the file: the file names the environment variables that hold them.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError, TokenError, UnknownListError

CONFIG_ENV = "NEWSLETTER_CONFIG"
DEFAULT_CONFIG = "config.toml"


@dataclass(frozen=True)
class NewsletterSettings:
    name: str
    from_email: str
    from_name: str = ""
    reply_to: str = ""
    base_url: str = ""
    website: str = ""  # the operator's own site: the pages after a click link back to it
    postal_address: str = ""
    secret_env: str = "NEWSLETTER_SECRET"  # noqa: S105 - the variable's name, not a secret
    previous_secrets_env: str = ""  # a variable with earlier secrets, comma-separated: they still verify links
    templates: str = "templates"
    issues_dir: str = "issues"
    max_issue_bytes: int = 512 * 1024  # a larger issue file is refused before it is parsed
    unsubscribe_mailto: str = ""  # an address that takes unsubscribe mails: added to List-Unsubscribe
    language: str = "en"  # the issues' language (BCP 47): the HTML's lang, for screen readers and translation

    @property
    def direction(self) -> str:
        """The whole message's text direction: right to left for a language written so, else each
        block's own (`auto`)."""
        return "rtl" if self.language.split("-")[0].lower() in _RTL_LANGUAGES else "auto"


_RTL_LANGUAGES = frozenset({"ar", "arc", "ckb", "dv", "fa", "he", "iw", "ku", "ps", "sd", "syr", "ug", "ur", "yi"})


@dataclass(frozen=True)
class StoreSettings:
    url: str = "sqlite:///subscribers/newsletter.db"
    retry_for: float = 30.0  # seconds a send keeps retrying a database that went away before giving up


@dataclass(frozen=True)
class FollowUp:
    """A mail of a list's welcome sequence: an issue file, sent this many days after a member joined."""

    issue: str
    days: int


@dataclass(frozen=True)
class ListSettings:
    title: str
    description: str = ""
    public: bool = False  # offered on the preference page to members of other lists
    welcome: str = ""  # an issue file sent once to each member who joins by confirming
    sequence: tuple[FollowUp, ...] = ()  # more of them, each some days after joining
    name: str = field(default="", metadata={"from_file": False})  # the table's name, set by `load`

    @property
    def onboarding(self) -> tuple[FollowUp, ...]:
        """The welcome mail (day 0) and the sequence after it: what a member who joins is enrolled in."""
        return ((FollowUp(self.welcome, 0),) if self.welcome else ()) + self.sequence


@dataclass(frozen=True)
class SegmentSettings:
    """A named segment: part of one list, chosen by a segment expression (see `segments`)."""

    list: str
    where: str
    name: str = field(default="", metadata={"from_file": False})  # the table's name, set by `load`


@dataclass(frozen=True)
class ProviderSettings:
    backend: str = "sendgrid"


@dataclass(frozen=True)
class SendSettings:
    concurrency: int = 8  # batches with the provider at once (SMTP: [smtp] connections)
    lease: int = 60  # seconds a worker's claimed rows stay its own without a heartbeat


@dataclass(frozen=True)
class SendGridSettings:
    api_key_env: str = "SENDGRID_API_KEY"
    api_base: str = "https://api.sendgrid.com"
    batch_size: int = 1000
    timeout: float = 30.0
    max_retries: int = 5
    retry_backoff: float = 1.0
    webhook_public_key: str = ""
    webhook_tolerance: int = 600
    open_tracking: bool = False  # a pixel that records each open (off: for privacy)
    click_tracking: bool = False  # links rewritten through SendGrid to record clicks (never the unsubscribe link)


@dataclass(frozen=True)
class PostmarkSettings:
    server_token_env: str = "POSTMARK_SERVER_TOKEN"  # noqa: S105 - the variable's name, not a secret
    api_base: str = "https://api.postmarkapp.com"
    message_stream: str = "broadcast"  # a broadcast stream: newsletters must not go out on the transactional one
    batch_size: int = 200  # messages per /email/batch (at most 500); whole messages: 8 in flight hold about 70 MB
    timeout: float = 30.0
    max_retries: int = 5
    retry_backoff: float = 1.0
    track_opens: bool = False
    track_links: bool = False  # never the unsubscribe link: it is a header and a link Postmark leaves alone
    webhook_username: str = ""  # the user name in the webhook URL's basic credentials
    webhook_password_env: str = "POSTMARK_WEBHOOK_PASSWORD"  # noqa: S105 - the variable's name


@dataclass(frozen=True)
class MailgunSettings:
    domain: str = ""  # the sending domain, as set up at Mailgun
    api_key_env: str = "MAILGUN_API_KEY"
    api_base: str = "https://api.mailgun.net"  # https://api.eu.mailgun.net for an EU domain
    batch_size: int = 1000  # recipients per message call; Mailgun allows at most 1000
    timeout: float = 30.0
    max_retries: int = 5
    retry_backoff: float = 1.0
    track_opens: bool = False
    track_clicks: bool = False
    webhook_signing_key_env: str = "MAILGUN_WEBHOOK_SIGNING_KEY"
    webhook_tolerance: int = 600  # seconds: older signed webhook timestamps are refused


@dataclass(frozen=True)
class SesSettings:
    region: str = "us-east-1"
    endpoint_url: str = ""  # empty: AWS's own endpoint for the region (tests point it at a local fake)
    configuration_set: str = ""  # the configuration set whose event destination publishes to SNS
    batch_size: int = 50  # destinations per SendBulkEmail call; SES allows at most 50
    timeout: float = 30.0
    max_retries: int = 5
    retry_backoff: float = 1.0
    read_quota: bool = True  # read the account's sending rate (GetAccount) at start and keep under it
    sns_topic_arn: str = ""  # the SNS topic whose notifications the webhook takes (required to take any)
    sns_certificate_file: str = ""  # a PEM trusted instead of fetching SigningCertURL (pinning)
    webhook_tolerance: int = 3600  # seconds: older signed SNS timestamps are refused (SNS retries for up to an hour)


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "localhost"
    port: int = 587
    security: str = "starttls"
    username: str = ""
    password_env: str = "SMTP_PASSWORD"  # noqa: S105 - the variable's name, not a secret
    timeout: float = 30.0
    connections: int = 4  # a pool: each sends one message at a time
    retries: int = 3  # tries of a recipient the server answers 4xx (greylisting, 421) in one run
    retry_backoff: float = 5.0  # seconds before the first retry, doubling each time


@dataclass(frozen=True)
class MailboxSettings:
    """The mailbox bounces come back to (the VERP address's, or the From address's)."""

    protocol: str = "imap"
    host: str = ""  # empty: no mailbox is read
    port: int = 993
    security: str = "ssl"  # "none" only for a loopback host
    username: str = ""
    password_env: str = "BOUNCE_MAILBOX_PASSWORD"  # noqa: S105 - the variable's name, not a secret
    folder: str = "INBOX"
    processed_folder: str = "newsletter/processed"  # where understood messages are moved (IMAP)
    unparsed_folder: str = "newsletter/unparsed"  # where messages no rule understood wait for a person (IMAP)
    timeout: float = 30.0
    batch: int = 200  # messages fetched per round trip
    every: int = 300  # seconds between the scheduler's reads of the mailbox


@dataclass(frozen=True)
class BouncesSettings:
    verp_address: str = ""  # e.g. "bounces@news.example.com": the return path becomes bounces+TOKEN@…; empty: no VERP
    complaint_address: str = ""  # an RFC 9477 CFBL-Address for feedback-loop reports; empty: no header
    soft_limit: int = 3  # soft bounces within soft_window_days that suppress the address
    soft_window_days: int = 30
    mailbox: MailboxSettings = field(default_factory=MailboxSettings)


@dataclass(frozen=True)
class ScheduleSettings:
    cron: str = "0 9 * * MON"
    timezone: str = "UTC"
    list: str = ""
    misfire_grace: int = 21600
    segment: str = ""  # the weekly send goes to this segment (an expression or a [segments] name) of the list


@dataclass(frozen=True)
class WebSettings:
    confirm_ttl: int = 172800
    rate_limit_per_ip: int = 10
    rate_limit_per_email: int = 3
    rate_limit_window: int = 3600
    max_form_bytes: int = 64 * 1024  # a form body (subscribe, confirm, unsubscribe); larger gets 413
    max_webhook_bytes: int = 5 * 1024 * 1024  # a provider's event batch
    allowed_origins: tuple[str, ...] = ()  # sites whose pages may post the subscribe form (no CSRF cookie)
    trusted_proxies: tuple[str, ...] = ("127.0.0.1",)  # whose X-Forwarded-For / -Proto are believed ("*": all)
    proof_of_work: bool = False  # the subscribe form makes the browser solve a challenge first (ALTCHA)
    proof_of_work_difficulty: int = 100_000  # the largest number the browser may have to try (about 0.2 s on a phone)

@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = False  # `serve` answers /metrics (to a bearer token only)
    token_env: str = "NEWSLETTER_METRICS_TOKEN"  # noqa: S105 - the variable holding the scraper's bearer token
    pushgateway: str = ""  # e.g. "http://127.0.0.1:9091": `send` and `bounces fetch` push their figures there
    job: str = "newsletter"  # the Pushgateway's job label


@dataclass(frozen=True)
class AlertSettings:
    email: str = ""  # the operator's address: alerts go there through the configured provider
    webhook_url: str = ""  # a JSON POST ({"text": ...}, as Slack's incoming webhooks take) to this address
    webhook_url_env: str = ""  # or the variable that holds it (a Slack webhook's address is a secret)
    failure_rate: float = 0.02  # a send run that ends with more of its rows failed or unknown than this
    stalled_minutes: int = 30  # a send with rows pending and no progress for this long
    sender_bounces: int = 10  # this many sender-side refusals (DMARC, a blocklist…) within sender_window_minutes
    sender_window_minutes: int = 60
    signature_failures: int = 5  # webhook calls refused for their signature within an hour, per provider
    timeout: float = 10.0  # seconds the webhook may take to answer


@dataclass(frozen=True)
class Config:
    path: Path
    newsletter: NewsletterSettings
    store: StoreSettings
    lists: dict[str, ListSettings]
    provider: ProviderSettings = field(default_factory=ProviderSettings)
    send: SendSettings = field(default_factory=SendSettings)
    sendgrid: SendGridSettings = field(default_factory=SendGridSettings)
    postmark: PostmarkSettings = field(default_factory=PostmarkSettings)
    mailgun: MailgunSettings = field(default_factory=MailgunSettings)
    ses: SesSettings = field(default_factory=SesSettings)
    bounces: BouncesSettings = field(default_factory=BouncesSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    web: WebSettings = field(default_factory=WebSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    segments: dict[str, SegmentSettings] = field(default_factory=dict)
    found_by: str = ""  # why this file is the one in use (`locate`)

    @property
    def root(self) -> Path:
        """Relative paths in the file are relative to the file's own folder."""
        return self.path.parent

    @property
    def templates_dir(self) -> Path:
        return self.root / self.newsletter.templates

    @property
    def click_tracking(self) -> bool:
        """Whether the configured provider rewrites links to count clicks, which makes each message larger."""
        return {"sendgrid": self.sendgrid.click_tracking, "postmark": self.postmark.track_links,
                "mailgun": self.mailgun.track_clicks}.get(self.provider.backend, False)

    @property
    def issues_dir(self) -> Path:
        return self.root / self.newsletter.issues_dir

    @property
    def welcome_files(self) -> frozenset[Path]:
        """Every list's welcome and sequence files: mailed to members as they join, never as an issue."""
        return frozenset((self.root / step.issue).resolve() for declared in self.lists.values()
                         for step in declared.onboarding)

    def list(self, name: str) -> ListSettings:
        """The declared list `name`, or an error naming the lists that exist."""
        try:
            return self.lists[name]
        except KeyError:
            known = ", ".join(sorted(self.lists)) or "none"
            raise UnknownListError(
                f"unknown list {name!r}; lists declared in {self.path.name}: {known}"
            ) from None

    def list_or_default(self, name: str | None) -> str:
        """`name`, else `[schedule] list`: the list a command acts on when none is given."""
        chosen = name or self.schedule.list
        if not chosen:
            raise ConfigError(f"{self.path}: no list given: pass --list NAME or set [schedule] list")
        self.list(chosen)
        return chosen

    def secret(self) -> bytes:
        """The signing secret for tokens; there is deliberately no built-in default."""
        value = os.environ.get(self.newsletter.secret_env, "")
        if not value:
            raise TokenError(
                f"environment variable {self.newsletter.secret_env} is not set; "
                f"set it to a long random string (it signs unsubscribe and confirmation links)"
            )
        return value.encode("utf-8")

    def previous_secrets(self) -> tuple[bytes, ...]:
        """Secrets used before a rotation: they verify links in mail already sent, and sign nothing."""
        name = self.newsletter.previous_secrets_env
        value = os.environ.get(name, "") if name else ""
        return tuple(part.strip().encode("utf-8") for part in value.split(",") if part.strip())

    def require_base_url(self) -> str:
        if not self.newsletter.base_url:
            raise ConfigError(
                f"{self.path}: [newsletter] base_url is required for links in sent mail"
            )
        return self.newsletter.base_url.rstrip("/")


_SECTIONS: Mapping[str, type] = MappingProxyType({
    "newsletter": NewsletterSettings,
    "store": StoreSettings,
    "provider": ProviderSettings,
    "send": SendSettings,
    "sendgrid": SendGridSettings,
    "postmark": PostmarkSettings,
    "mailgun": MailgunSettings,
    "ses": SesSettings,
    "bounces": BouncesSettings,
    "smtp": SmtpSettings,
    "schedule": ScheduleSettings,
    "web": WebSettings,
    "metrics": MetricsSettings,
    "alerts": AlertSettings,
})
_REQUIRED_SECTIONS = ("newsletter",)
_CHOICES: Mapping[tuple[str, str], tuple[str, ...]] = MappingProxyType({
    ("provider", "backend"): ("sendgrid", "postmark", "mailgun", "ses", "smtp"),
    ("smtp", "security"): ("starttls", "ssl", "none"),
    ("bounces", "protocol"): ("imap", "pop3"),
    ("bounces", "security"): ("ssl", "starttls", "none"),
})


def _build(cls: type, table: Any, section: str, path: Path) -> Any:
    where = f"{path}: [{section}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("from_file", True)}
    for key in table:
        if key not in fields:
            raise ConfigError(f"{where} {key}: unknown key (known: {', '.join(fields)})")
    values = {}
    for name, f in fields.items():
        if name in table and dataclasses.is_dataclass(hints[name]):  # a sub-table, e.g. [bounces.mailbox]
            values[name] = _build(hints[name], table[name], f"{section}.{name}", path)
        elif name in table and (tables := _tables_of(hints[name])):  # an array of tables, e.g. a list's sequence
            values[name] = _array_of(tables, table[name], f"{section}.{name}", path)
        elif name in table:
            choices = _CHOICES.get((section.split(".")[0], name))
            values[name] = _value(table[name], hints[name], f"{where} {name}", choices)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where} {name}: required key missing")
    return cls(**values)


def _tables_of(want: Any) -> type | None:
    """The dataclass of a `tuple[SomeSettings, ...]` field, else None."""
    args = typing.get_args(want) if typing.get_origin(want) is tuple else ()
    return args[0] if args and dataclasses.is_dataclass(args[0]) else None  # type: ignore[return-value]


def _array_of(cls: type, value: Any, section: str, path: Path) -> tuple[Any, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: [{section}]: expected an array of tables, got {value!r}")
    return tuple(_build(cls, item, f"{section}[{index}]", path) for index, item in enumerate(value))


def _value(value: Any, want: Any, where: str, choices: tuple[str, ...] | None) -> Any:
    """One key's value, checked against its field's type (and choices): as the dataclass takes it."""
    if typing.get_origin(want) is tuple:  # a TOML array of strings
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where}: expected an array of strings, got {value!r}")
        return tuple(value)
    ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{where}: expected {want.__name__}, got {type(value).__name__}")
    if choices and value not in choices:
        raise ConfigError(f"{where}: must be one of {', '.join(choices)}, got {value!r}")
    if want in (int, float) and value <= 0:
        raise ConfigError(f"{where}: must be positive, got {value}")
    return value


def _check_ec_public_key(public_key: str) -> None:
    """ValueError unless `public_key` is what SendGrid shows for a signed webhook: a base64 EC public key."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    pem = f"-----BEGIN PUBLIC KEY-----\n{public_key.strip()}\n-----END PUBLIC KEY-----"
    try:
        key = load_pem_public_key(pem.encode("ascii", "replace"))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("not an elliptic-curve (ECDSA) key, which SendGrid's signed webhook uses")


def _check_keys(sections: dict[str, Any], path: Path) -> None:
    """Key material is parsed now: a bad key is one line naming it, not every webhook refused later."""
    key = sections["sendgrid"].webhook_public_key
    if key:
        try:
            _check_ec_public_key(key)
        except ValueError as exc:
            raise ConfigError(f"{path}: [sendgrid] webhook_public_key: {exc}; paste the verification key from "
                              f"SendGrid's Mail Settings > Signed Event Webhook") from None


def _resolve_store_url(url: str, root: Path) -> str:
    """Make a relative SQLite path relative to the config file, not to the working directory."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
        rest = url[len(prefix):]
        if rest and rest != ":memory:" and not rest.startswith("file:"):
            return prefix + str((root / rest).resolve())
    return url


def xdg_home(variable: str, default: str) -> Path:
    """An XDG base directory: the variable's value when it is an absolute path (the spec ignores a
    relative one), else its default under the home folder."""
    value = os.environ.get(variable, "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / default  # noqa: PTH117


def locate(path: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """Which config file is used, and why: `path` (--config), else $NEWSLETTER_CONFIG, else
    ./config.toml, else $XDG_CONFIG_HOME/newsletter/config.toml (~/.config by default). When none
    exists, ./config.toml, said so."""
    if path:
        return Path(path), "given by --config"
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]), f"named by ${CONFIG_ENV}"
    if Path(DEFAULT_CONFIG).is_file():
        return Path(DEFAULT_CONFIG), "found in the working folder"
    xdg = xdg_home("XDG_CONFIG_HOME", ".config") / "newsletter" / DEFAULT_CONFIG
    if xdg.is_file():
        return xdg, XDG_FOUND
    return Path(DEFAULT_CONFIG), (f"none found: not given by --config or ${CONFIG_ENV}, not in the working folder, "
                                  f"not at {xdg}")


def missing(chosen: Path, why: str) -> ConfigError:
    """The error for a config file that is not there, saying what to do."""
    return ConfigError(f"{chosen}: config file not found ({why}); pass --config PATH, set ${CONFIG_ENV}, or run "
                       f"`newsletter init`")


XDG_FOUND = "found in the user's config folder ($XDG_CONFIG_HOME/newsletter, ~/.config/newsletter by default)"


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config that `locate` finds."""
    chosen, why = locate(path)
    data = _read_toml(chosen, why)
    if why == XDG_FOUND and "url" not in data.get("store", {}):  # the user's own: their data goes under XDG too
        data.setdefault("store", {})["url"] = "sqlite:///" + str(
            xdg_home("XDG_DATA_HOME", ".local/share") / "newsletter" / "newsletter.db")
    path_ = Path(os.path.abspath(chosen))  # noqa: PTH100 - not resolve(): a symlinked config keeps its folder
    _check_sections(data, path_)
    sections = {name: _build(cls, data.get(name, {}), name, path_) for name, cls in _SECTIONS.items()}
    lists = _lists(data.get("lists", {}), path_)
    segments = _segments(data.get("segments", {}), lists, path_)
    _check_newsletter(sections["newsletter"], path_)
    _check_origins(sections["web"].allowed_origins, path_)
    _check_bounces(sections["bounces"], path_)
    _check_metrics(sections["metrics"], path_)
    _check_alerts(sections["alerts"], path_)
    _check_keys(sections, path_)
    store = dataclasses.replace(sections["store"], url=_resolve_store_url(sections["store"].url, path_.parent))
    return Config(path=path_, lists=lists, segments=segments, found_by=why, **{**sections, "store": store})


def _read_toml(chosen: Path, why: str) -> dict[str, Any]:
    try:
        raw = chosen.read_bytes()
    except FileNotFoundError:
        raise missing(chosen, why) from None
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read config file: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{chosen}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{chosen}: invalid TOML: {exc}") from None


def _check_sections(data: dict[str, Any], path: Path) -> None:
    for key in data:
        if key not in _SECTIONS and key not in ("lists", "segments"):
            known = ", ".join([*_SECTIONS, "lists", "segments"])
            raise ConfigError(f"{path}: [{key}]: unknown section (known: {known})")
    for key in _REQUIRED_SECTIONS:
        if key not in data:
            raise ConfigError(f"{path}: [{key}]: required section missing")


def _lists(table: Any, path: Path) -> dict[str, ListSettings]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [lists] must hold one table per list, e.g. [lists.weekly]")
    found = {name: dataclasses.replace(_build(ListSettings, settings, f"lists.{name}", path), name=name)
             for name, settings in table.items()}
    for declared in found.values():
        _check_onboarding(declared, path)
    return found


def _check_onboarding(declared: ListSettings, path: Path) -> None:
    """A list's welcome and sequence files exist, in order of their days, each mail once."""
    where = f"{path}: [lists.{declared.name}]"
    for index, step in enumerate(declared.sequence):
        if step.days <= 0 or (index and step.days <= declared.sequence[index - 1].days):
            raise ConfigError(f"{where} sequence[{index}] days: {step.days} must be more than the mail before's")
    files = [("welcome", declared.welcome)] if declared.welcome else []
    files += [(f"sequence[{index}] issue", step.issue) for index, step in enumerate(declared.sequence)]
    for key, issue in files:
        if not (path.parent / issue).is_file():
            raise ConfigError(f"{where} {key}: {issue}: no such file (relative to {path.name}'s folder)")
    issues = [step.issue for step in declared.onboarding]
    if len(set(issues)) != len(issues):
        raise ConfigError(f"{where} sequence: each mail may be in it once")


def _segments(table: Any, lists: dict[str, ListSettings], path: Path) -> dict[str, SegmentSettings]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [segments] must hold one table per segment, e.g. [segments.beta]")
    found = {name: dataclasses.replace(_build(SegmentSettings, settings, f"segments.{name}", path), name=name)
             for name, settings in table.items()}
    for segment in found.values():
        if segment.list not in lists:
            raise ConfigError(f"{path}: [segments.{segment.name}] list: {segment.list!r} is not a declared list "
                              f"({', '.join(sorted(lists)) or 'none'})")
    return found


def _check_newsletter(nl: NewsletterSettings, path: Path) -> None:
    for key in ("from_email", "reply_to", "from_name", "name", "unsubscribe_mailto"):
        if any(c in getattr(nl, key) for c in "\r\n"):
            raise ConfigError(f"{path}: [newsletter] {key}: must not contain line breaks")
    for key in ("base_url", "website"):
        if getattr(nl, key) and urlsplit(getattr(nl, key)).scheme not in ("http", "https"):
            raise ConfigError(f"{path}: [newsletter] {key}: must start with https:// or http://")


def _check_bounces(bounces: BouncesSettings, path: Path) -> None:
    """A VERP address must be one, and a mailbox is read in the clear only on this machine."""
    for key in ("verp_address", "complaint_address"):
        value = getattr(bounces, key)
        local, _, domain = value.rpartition("@")
        if value and (not local or "." not in domain or any(c in value for c in " <>\r\n")):
            raise ConfigError(f"{path}: [bounces] {key}: {value!r} is not an address such as bounces@news.example.com")
    box = bounces.mailbox
    if box.host and box.security == "none" and box.host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(f"{path}: [bounces.mailbox] security = \"none\" sends the password in the clear: only for "
                          f"a mailbox on this machine (127.0.0.1), not {box.host}")


def _check_origins(origins: tuple[str, ...], path: Path) -> None:
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise ConfigError(f"{path}: [web] allowed_origins: {origin!r} is not an origin "
                              f"(scheme and host only, such as https://www.example.org)")


def _check_metrics(metrics: MetricsSettings, path: Path) -> None:
    parts = urlsplit(metrics.pushgateway)
    if metrics.pushgateway and (parts.scheme not in ("http", "https") or not parts.netloc):
        raise ConfigError(f"{path}: [metrics] pushgateway: {metrics.pushgateway!r} is not an http(s) address "
                          f"(such as http://127.0.0.1:9091)")
    if metrics.enabled and not metrics.token_env:
        raise ConfigError(f"{path}: [metrics] token_env: name the environment variable holding the bearer token "
                          f"that /metrics asks for")


def _check_alerts(alerts: AlertSettings, path: Path) -> None:
    where = f"{path}: [alerts]"
    if alerts.webhook_url and alerts.webhook_url_env:
        raise ConfigError(f"{where} webhook_url and webhook_url_env: give one of them")
    parts = urlsplit(alerts.webhook_url)
    if alerts.webhook_url and (parts.scheme not in ("http", "https") or not parts.netloc):
        raise ConfigError(f"{where} webhook_url: {alerts.webhook_url!r} is not an http(s) address")
    if alerts.email and ("@" not in alerts.email or any(c in alerts.email for c in "\r\n ,")):
        raise ConfigError(f"{where} email: {alerts.email!r} is not one address")
    if not 0 <= alerts.failure_rate < 1:
        raise ConfigError(f"{where} failure_rate: {alerts.failure_rate} is not a share between 0 and 1 (0.02 is 2%)")
    for name in ("stalled_minutes", "sender_bounces", "sender_window_minutes", "signature_failures"):
        if getattr(alerts, name) < 1:
            raise ConfigError(f"{where} {name}: must be at least 1")
