"""What became of each send: the ledger's counts joined with the provider's events.

Counts are of people, not of events: an address that opened five times is one unique open. Rates
are over what the denominator can know: bounces over messages handed over, opens, clicks and
unsubscribes over messages delivered. Opens need `[sendgrid] open_tracking`, clicks
`click_tracking`; without them those columns stay at zero and the report says so.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from .bounces import STATUS_CODE
from .csvio import neutralise
from .errors import ConfigError
from .ledger import delivery_counts
from .schema import FAILED, PENDING, SENT, UNKNOWN, deliveries, events, history, lists, sends
from .store import Store

TIMELINE_HOURS = 72


@dataclass(frozen=True)
class Link:
    url: str
    clicks: int
    people: int


@dataclass(frozen=True)
class IssueReport:
    """One issue sent to one list."""

    issue: str
    list_name: str
    subject: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    recipients: int
    sent: int
    failed: int
    unknown: int
    pending: int
    delivered: int
    bounced: int
    complained: int
    unsubscribed: int
    opened: int
    clicked: int
    top_links: tuple[Link, ...] = ()
    # Hours since the send started → (handed over, opened first, clicked first) in that hour.
    timeline: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    tracked: bool = True  # whether the provider of this send reports events (SMTP does not)
    machine_opened: int = 0  # people whose every open was a machine's (the provider said so): not in `opened`
    # (event kind, status code, people, one server's words): bounces, deferrals, the sender's own refusals
    # (blocked) and complaints, by class and reason, most first.
    bounce_reasons: tuple[tuple[str, str, int, str], ...] = ()
    segment: str = ""  # the segments the send was fixed to; "" for the whole list

    @property
    def sender_side(self) -> int:
        """People whose mail was refused because of the sender's setup (DMARC, authentication, a blocklist)."""
        return sum(people for kind, _status, people, _words in self.bounce_reasons if kind == "blocked")

    def rate(self, count: int, over: int, *, from_events: bool = True) -> float | None:
        """count / over; None where it cannot be known (nothing to divide by, or no events can come)."""
        return count / over if over and (self.tracked or not from_events) else None

    @property
    def rates(self) -> dict[str, float | None]:
        base = self.delivered or self.sent  # without delivery events, what was handed over
        return {
            "delivered": self.rate(self.delivered, self.sent),
            "bounced": self.rate(self.bounced, self.sent),
            "complained": self.rate(self.complained, base),
            "unsubscribed": self.rate(self.unsubscribed, base, from_events=False),  # the link counts too
            "opened": self.rate(self.opened, base),
            "clicked": self.rate(self.clicked, base),
            "click_to_open": self.rate(self.clicked, self.opened),
        }

    def table_cells(self) -> dict[str, str]:
        """The cells of this send's row in a table (the CLI's, the HTML page's) after issue and list."""
        def cell(count: int, rate: float | None) -> str:
            return f"{count:,} ({percent(rate)})" if rate is not None or count else percent(rate)

        rates = self.rates
        cells = {"recipients": f"{self.recipients:,}", "sent": f"{self.sent:,}", "pending": f"{self.pending:,}"}
        for name in ("delivered", "bounced", "complained", "unsubscribed", "opened", "clicked"):
            title = f"unique {name.removesuffix('ed')}s" if name in ("opened", "clicked") else name
            cells[title] = cell(getattr(self, name), rates[name])
            if name == "opened":
                cells["machine opens"] = f"{self.machine_opened:,}" if self.tracked else "n/a"
        return cells

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["started_at"] = self.started_at.isoformat() + "Z"
        data["finished_at"] = self.finished_at.isoformat() + "Z" if self.finished_at else None
        data["timeline"] = [{"hour": hour, "sent": s, "opened": o, "clicked": c}
                            for hour, (s, o, c) in sorted(self.timeline.items())]
        data["rates"] = self.rates
        return data


COLUMNS = ("issue", "list_name", "subject", "started_at", "recipients", "sent", "failed", "unknown", "pending",
           "delivered", "bounced", "complained", "unsubscribed", "opened", "machine_opened", "clicked")


def to_csv(reports: list[IssueReport]) -> str:
    """One row per issue and list, counts and rates; text that starts a formula is quoted as text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    rate_names = list(reports[0].rates) if reports else []
    writer.writerow([*COLUMNS, *(f"{name}_rate" for name in rate_names)])
    for report in reports:
        row = report.as_dict()
        values = [neutralise(v) if isinstance(v, str) else v for v in (row[column] for column in COLUMNS)]
        writer.writerow([*values, *("" if r is None else r for r in report.rates.values())])
    return out.getvalue()


def _hour(at: dt.datetime, start: dt.datetime) -> int | None:
    hour = int((at - start).total_seconds() // 3600)
    return hour if 0 <= hour < TIMELINE_HOURS else None


def sends_of(store: Store, issue: str | None = None, list_name: str | None = None, *,
             welcome: bool = True) -> list[tuple[str, str]]:
    """(issue, list) of every send, newest first; narrowed to an issue and/or a list, and to issues
    (no welcome mails) without `welcome`."""
    query = sa.select(sends.c.issue, lists.c.name).join(lists, lists.c.id == sends.c.list_id)
    if not welcome:
        query = query.where(sends.c.kind.is_(None))
    if issue is not None:
        query = query.where(sends.c.issue == issue)
    if list_name is not None:
        query = query.where(lists.c.name == list_name)
    with store.engine.connect() as conn:
        return [(row[0], row[1]) for row in conn.execute(query.order_by(sends.c.started_at.desc(), sends.c.issue))]


def build(store: Store, issue: str, list_name: str, *, links: int = 10) -> IssueReport:
    """The report of one send (issue, list), from the ledger, the events and the history."""
    with store.engine.connect() as conn:
        send = conn.execute(
            sa.select(sends.c.subject, sends.c.started_at, sends.c.finished_at, lists.c.id, sends.c.events,
                      sends.c.segment)
            .join(lists, lists.c.id == sends.c.list_id)
            .where(sends.c.issue == issue, lists.c.name == list_name)
        ).one()
        subject, started, finished, list_id, tracked, segment = send
        states = delivery_counts(conn, issue, list_id)
        recipients = sum(states.values())
        # Events of this issue for recipients on this list (an event names its list when the provider
        # carried our custom arguments; the ledger row ties the rest to the list).
        on_list = sa.select(deliveries.c.subscriber_id).where(deliveries.c.issue == issue,
                                                               deliveries.c.list_id == list_id)
        mine = sa.and_(events.c.issue == issue, events.c.subscriber_id.in_(on_list))
        by_people = sa.or_(events.c.machine.is_(None), events.c.machine.is_(False))
        people: dict[str, int] = dict(conn.execute(
            sa.select(events.c.kind, sa.func.count(sa.distinct(events.c.subscriber_id))).where(mine, by_people)
            .group_by(events.c.kind)
        ).all())
        readers = sa.select(events.c.subscriber_id).where(mine, by_people, events.c.kind == "opened")
        machine_opened = conn.execute(
            sa.select(sa.func.count(sa.distinct(events.c.subscriber_id)))
            .where(mine, events.c.kind == "opened", events.c.machine.is_(True), events.c.subscriber_id.not_in(readers))
        ).scalar() or 0
        link_rows = conn.execute(
            sa.select(events.c.reason, sa.func.count(), sa.func.count(sa.distinct(events.c.subscriber_id)))
            .where(mine, events.c.kind == "clicked", events.c.reason.is_not(None))
            .group_by(events.c.reason).order_by(sa.func.count().desc(), events.c.reason).limit(links)
        ).all()
        unsubscribers = {row[0] for row in conn.execute(
            sa.select(events.c.subscriber_id).where(mine, events.c.kind == "unsubscribed"))}
        unsubscribers |= {row[0] for row in conn.execute(
            sa.select(history.c.subscriber_id).where(history.c.list_id == list_id,
                                                     history.c.to_status == "unsubscribed",
                                                     history.c.issue == issue))}
        reasons = _bounce_reasons(conn.execute(
            sa.select(events.c.kind, events.c.reason, events.c.subscriber_id)
            .where(mine, events.c.kind.in_(_BOUNCE_KINDS))).all())
        timeline: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
        for (at,) in conn.execute(sa.select(deliveries.c.updated_at).where(
                deliveries.c.issue == issue, deliveries.c.list_id == list_id, deliveries.c.state == SENT)):
            if (hour := _hour(at, started)) is not None:
                timeline[hour][0] += 1
        for index, kind in ((1, "opened"), (2, "clicked")):
            firsts = conn.execute(sa.select(sa.func.min(events.c.occurred_at))
                                  .where(mine, by_people, events.c.kind == kind).group_by(events.c.subscriber_id))
            for (at,) in firsts:
                if (hour := _hour(at, started)) is not None:
                    timeline[hour][index] += 1
    return IssueReport(
        issue=issue, list_name=list_name, subject=subject, started_at=started, finished_at=finished,
        recipients=recipients, sent=states.get(SENT, 0), failed=states.get(FAILED, 0),
        unknown=states.get(UNKNOWN, 0), pending=states.get(PENDING, 0),
        delivered=people.get("delivered", 0), bounced=people.get("bounced", 0) + people.get("dropped", 0),
        complained=people.get("complained", 0), unsubscribed=len(unsubscribers),
        opened=people.get("opened", 0), clicked=people.get("clicked", 0),
        top_links=tuple(Link(str(url), int(clicks), int(who)) for url, clicks, who in link_rows),
        timeline={hour: (s, o, c) for hour, (s, o, c) in timeline.items()},
        tracked=tracked is not False,  # a send from before the column was recorded: assume events came
        machine_opened=int(machine_opened), bounce_reasons=reasons, segment=str(segment or ""),
    )


_BOUNCE_KINDS = ("bounced", "deferred", "blocked", "complained", "dropped")


def _bounce_reasons(rows: Sequence[Any]) -> tuple[tuple[str, str, int, str], ...]:
    """(kind, status code, people, an example of the words) for each kind and code, most people first."""
    people: dict[tuple[str, str], set[Any]] = defaultdict(set)
    words: dict[tuple[str, str], str] = {}
    for kind, reason, subscriber in rows:
        found = STATUS_CODE.search(reason or "")
        key = (str(kind), found.group(0) if found else "")
        people[key].add(subscriber)
        words.setdefault(key, str(reason or "")[:200])
    return tuple(sorted(((kind, code, len(who), words[(kind, code)]) for (kind, code), who in people.items()),
                        key=lambda row: (-row[2], row[0], row[1])))


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    svg = buffer.getvalue()
    return svg[svg.index("<svg"):]  # drop the XML prolog and doctype: the SVG goes inline


def _plots(reports: list[IssueReport]) -> list[tuple[str, str]]:
    """(title, inline SVG) for each plot: a 72-hour timeline per send, rates across sends."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: figures are drawn to SVG
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("--html draws its plots with matplotlib: pip install 'newsletter-pipeline[report]'") from None
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, selectable
    matplotlib.rcParams["svg.hashsalt"] = "newsletter"  # the same report gives the same page
    plots = []
    hours = list(range(TIMELINE_HOURS))
    for report in reports:
        figure = Figure(figsize=(8, 3.2))
        axes = figure.subplots()
        for index, label in enumerate(("handed over", "opened", "clicked")):
            running, values = 0, []
            for hour in hours:
                running += report.timeline.get(hour, (0, 0, 0))[index]
                values.append(running)
            axes.step(hours, values, where="post", label=label)
        axes.set_xlabel("hours after the send started")
        axes.set_ylabel("people (cumulative)")
        axes.set_xlim(0, TIMELINE_HOURS)
        axes.set_ylim(bottom=0)
        axes.legend(loc="lower right")
        axes.grid(alpha=0.3)
        plots.append((f"{report.issue} to {report.list_name}: the first {TIMELINE_HOURS} hours", _svg(figure)))
    if len(reports) > 1:
        ordered = sorted(reports, key=lambda r: r.started_at)
        figure = Figure(figsize=(8, 3.2))
        axes = figure.subplots()
        labels = [f"{r.issue}\n{r.list_name}" for r in ordered]
        for name in ("opened", "clicked", "bounced", "unsubscribed"):
            axes.plot(labels, [100 * (r.rates[name] or 0) for r in ordered], marker="o", label=f"{name} %")
        axes.set_ylabel("% of delivered (bounced: of sent)")
        axes.set_ylim(bottom=0)
        axes.legend(loc="upper left")
        axes.grid(alpha=0.3)
        plots.append(("rates across sends", _svg(figure)))
    return plots


def percent(rate: float | None) -> str:
    """A rate for people: one decimal from 1 %, two significant digits below (Gmail's limits are 0.1 and 0.3 %)."""
    if rate is None:
        return "n/a"
    if rate == 0:
        return "0 %"
    share = 100 * rate
    return f"{share:.1f} %" if share >= 1 else f"{share:#.2g} %"


def to_html(reports: list[IssueReport], title: str) -> str:
    """One self-contained page: tables of counts and rates, top links, and the plots inline as SVG."""
    from html import escape

    rows = "".join(
        f"<tr><td>{escape(r.issue)}</td><td>{escape(r.list_name)}</td><td>{escape(r.subject)}</td>"
        + "".join(f"<td>{value}</td>" for value in r.table_cells().values()) + "</tr>" for r in reports)
    links = "".join(
        f"<h3>Top links: {escape(r.issue)} to {escape(r.list_name)}</h3><table><tr><th>link</th><th>clicks</th>"
        f"<th>people</th></tr>"
        + "".join(f"<tr><td>{escape(link.url)}</td><td>{link.clicks:,}</td><td>{link.people:,}</td></tr>"
                  for link in r.top_links) + "</table>"
        for r in reports if r.top_links)
    columns = ("issue", "list", "subject", *(reports[0].table_cells() if reports else ()))
    header = "".join(f"<th>{column}</th>" for column in columns)
    figures = "".join(f'<figure><figcaption>{escape(caption)}</figcaption>{svg}</figure>'
                      for caption, svg in _plots(reports))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>
body {{ font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 60rem;
        padding: 0 1rem; color: #1f2328; }}
table {{ border-collapse: collapse; margin: 0 0 1.5rem; }} th, td {{ border: 1px solid #d0d7de; padding: 4px 8px; }}
th {{ background: #f3f5f7; text-align: left; }} td {{ font-variant-numeric: tabular-nums; }}
figure {{ margin: 1.5rem 0; }} figcaption {{ font-weight: 600; }} svg {{ max-width: 100%; height: auto; }}
</style></head><body>
<h1>{escape(title)}</h1>
<table><tr>{header}</tr>{rows}</table>
{figures}
{links}
<p>Counts are of people; opens and clicks need SendGrid's open and click tracking ([sendgrid] open_tracking,
click_tracking), and Apple Mail's privacy protection opens every message it receives.</p>
</body></html>
"""
