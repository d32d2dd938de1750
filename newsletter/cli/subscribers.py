"""`subscribers …`: import, add, show, unsubscribe, suppress, unsuppress, remove, lists, export."""

from __future__ import annotations

import sys

import click

from ..app import STATUSES
from .base import State, cli, emit, err, json_option, out, pass_state, print_json, settled_heap


@cli.group()
def subscribers() -> None:
    """Manage subscribers, lists and suppressions."""


@subscribers.command("import")
@click.argument("file", type=click.Path())
@click.option("--list", "list_name", required=True, help="List to import into.")
@click.option("--status", type=click.Choice(["active", "unconfirmed"]), default="active", show_default=True,
              help="For rows without a status column of their own.")
@click.option("--strict", is_flag=True, help="Fail on the first bad row and change nothing.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False),
              help="Where to write rejected rows (default: FILE.rejects.csv beside FILE).")
@click.option("--delimiter", type=click.Choice(["comma", "semicolon", "tab"]),
              help="The field separator (default: found from the header).")
@click.option("--email-column", help="The column with the addresses (default: email, or Mailchimp's Email Address).")
@pass_state
def subscribers_import(state: State, file: str, list_name: str, status: str, strict: bool,
                       rejects_path: str | None, delimiter: str | None, email_column: str | None) -> None:
    """Import subscribers from a CSV file (ours, Mailchimp's or listmonk's export, or any with an email column)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
        console=err, transient=True, disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task("importing", total=None)
        def show(rows: int) -> None:
            progress.update(task, description=f"importing: {rows:,} rows read")

        separator = {"comma": ",", "semicolon": ";", "tab": "\t"}.get(delimiter or "")
        with settled_heap():
            report = state.nl.subscribers.import_csv(file, list_name, status=status, strict=strict,
                                                     rejects_path=rejects_path, progress=show, delimiter=separator,
                                                     email_column=email_column)
    emit(report.summary(), list=list_name, counts=report.counts())
    for line, reason in report.reject_samples:
        err.print(f"{file}:{line}: rejected: {reason}", markup=False)
    for line, reason in report.kept_out_samples:
        err.print(f"{file}:{line}: kept out: {reason}", markup=False)
    if report.rejects_path:
        more = report.rejected - len(report.reject_samples)
        err.print(f"{report.rejected} rejected rows{f' ({more} more than shown)' if more > 0 else ''} "
                  f"written to {report.rejects_path}")


def _attrs(pairs: tuple[str, ...]) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--attr")
        result[key.strip()] = value
    return result


@subscribers.command("add")
@click.argument("email")
@click.option("--list", "list_name", required=True)
@click.option("--name", default="")
@click.option("--attr", "attrs", multiple=True, metavar="KEY=VALUE", help="An attribute; repeatable.")
@click.option("--status", type=click.Choice(["active", "unconfirmed"]), default="active", show_default=True)
@pass_state
def subscribers_add(state: State, email: str, list_name: str, name: str, attrs: tuple[str, ...], status: str) -> None:
    """Add one subscriber to a list (or update their name and attributes)."""
    subscriber, outcome = state.nl.subscribers.add(email, list_name, name=name, attributes=_attrs(attrs), status=status)
    shown = subscriber.email if subscriber else email.strip()
    out.print(f"{shown}: {outcome} on {list_name}", markup=False)


@subscribers.command("show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Everything held on the person, as JSON (a data-access request).")
@pass_state
def subscribers_show(state: State, email: str, as_json: bool) -> None:
    """Show one subscriber: name, attributes, lists, suppression and the history of their consent."""
    from rich.markup import escape

    if as_json:
        import json

        click.echo(json.dumps(state.nl.subscribers.record(email), indent=2, default=str, ensure_ascii=False))
        return
    s = state.nl.subscribers.get(email)
    out.print(f"email:      {escape(s.email)}")
    out.print(f"name:       {escape(s.name)}")
    out.print(f"since:      {s.created_at:%Y-%m-%d %H:%M} UTC")
    for key, value in sorted(s.attributes.items()):
        out.print(f"attr.{escape(key)}: {escape(value)}")
    for list_name, (status, at, source) in sorted(s.memberships.items()):
        out.print(f"list {list_name}: {status} since {at:%Y-%m-%d %H:%M} UTC ({escape(source)})")
    if s.tags:
        out.print(f"tags:       {escape(', '.join(s.tags))}")
    if s.suppressed:
        out.print(f"suppressed: {escape(s.suppressed)}")
    for event in state.nl.subscribers.record(email)["events"]:
        if event["kind"] in ("bounced", "deferred", "blocked", "complained", "dropped"):
            issue = f" (issue {event['issue']})" if event["issue"] else ""
            out.print(f"{event['occurred_at']:%Y-%m-%d %H:%M} UTC  {event['kind']}{issue}: {event['reason'] or ''}",
                      markup=False)
    for h in state.nl.subscribers.history(email):
        where = f"list {h['list']}" if h["list"] else "address"
        change = f"{h['from_status'] or 'none'} -> {h['to_status']}"
        why = f": {h['reason']}" if h["reason"] else ""
        link = f" (the link in issue {h['issue']})" if h["issue"] else ""
        out.print(f"{h['at']:%Y-%m-%d %H:%M} UTC  {where}: {change} by {h['source']}{link}{why}", markup=False)


@subscribers.command("unsubscribe")
@click.argument("email")
@click.option("--list", "list_name", help="The list to leave.")
@click.option("--all", "all_lists", is_flag=True, help="Leave every list.")
@pass_state
def subscribers_unsubscribe(state: State, email: str, list_name: str | None, all_lists: bool) -> None:
    """Unsubscribe an address from one list or from all of them."""
    if bool(list_name) == all_lists:
        raise click.UsageError("give exactly one of --list NAME or --all")
    changed = state.nl.subscribers.unsubscribe(email, list_name)
    out.print(f"unsubscribed from {', '.join(changed)}" if changed else "already unsubscribed")


@subscribers.command("tag")
@click.argument("email")
@click.argument("tags", nargs=-1, required=True)
@pass_state
def subscribers_tag(state: State, email: str, tags: tuple[str, ...]) -> None:
    """Tag a subscriber: TAGS are lowercase words (letters, digits, '-', '_', '.'), for segments."""
    added = state.nl.subscribers.tag(email, list(tags))
    out.print(f"tagged {', '.join(added)}" if added else "already tagged", markup=False)


@subscribers.command("untag")
@click.argument("email")
@click.argument("tags", nargs=-1, required=True)
@pass_state
def subscribers_untag(state: State, email: str, tags: tuple[str, ...]) -> None:
    """Take tags off a subscriber."""
    removed = state.nl.subscribers.untag(email, list(tags))
    out.print(f"untagged {', '.join(removed)}" if removed else "had none of those tags", markup=False)


@subscribers.command("count")
@click.option("--list", "list_name", help="The list (default: [schedule] list).")
@click.option("--where", "expression", required=True, help="A segment expression, e.g. 'tag:vip+opened:true'.")
@pass_state
def subscribers_count(state: State, list_name: str | None, expression: str) -> None:
    """How many of a list's members who may be mailed match a segment expression."""
    name = state.nl.config.list_or_default(list_name)
    out.print(f"{state.nl.subscribers.count_where(name, expression):,}", markup=False)


@cli.group("segment")
def segment_group() -> None:
    """Segments: part of a list chosen by a small filter language (see the README)."""


@segment_group.command("explain")
@click.argument("expression")
@click.option("--list", "list_name", help="The list (default: [schedule] list).")
@pass_state
def segment_explain(state: State, expression: str, list_name: str | None) -> None:
    """Print the expression's tree, the SQL it becomes with its bound parameters, and its count."""
    name = state.nl.config.list_or_default(list_name)
    tree, sql, params, count = state.nl.subscribers.explain_segment(name, expression)
    out.print("\n".join(tree), markup=False)
    out.print(sql, markup=False)
    shown = (f"{k}={str(v)!r}" if isinstance(v, str) else f"{k}={v!r}" for k, v in params.items())  # StrEnums as text
    out.print("parameters: " + ", ".join(shown), markup=False)
    out.print(f"count: {count:,}", markup=False)


@subscribers.command("suppress")
@click.argument("email")
@click.option("--reason", required=True)
@pass_state
def subscribers_suppress(state: State, email: str, reason: str) -> None:
    """Never mail an address again, on any list."""
    new = state.nl.subscribers.suppress(email, reason)
    out.print("suppressed" if new else "already suppressed")


@subscribers.command("unsuppress")
@click.argument("email")
@click.option("--reason", required=True, help="Why (recorded in the person's history).")
@pass_state
def subscribers_unsuppress(state: State, email: str, reason: str) -> None:
    """Take an address off the suppression list (undo a mistaken suppress)."""
    state.nl.subscribers.unsuppress(email, reason)
    out.print("no longer suppressed; their memberships are as they were", markup=False)


@subscribers.command("remove")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_state
def subscribers_remove(state: State, email: str, yes: bool) -> None:
    """Erase a person (GDPR): only a hash stays, so they are never imported again."""
    if not yes:
        click.confirm(f"Erase {email} and everything stored about them?", abort=True, err=True)
    state.nl.subscribers.erase(email)
    out.print("erased; a hashed suppression entry keeps the address from being imported again")


@subscribers.command("lists")
@json_option
@pass_state
def subscribers_lists(state: State, as_json: bool) -> None:
    """Count each list's members by status."""
    from rich.table import Table

    counts = state.nl.subscribers.counts()
    if as_json:
        print_json(counts)
        return
    table = Table("list", *STATUSES, "suppressed")
    for name, by_status in counts.items():
        table.add_row(name, *(f"{by_status[s]:,}" for s in (*STATUSES, "suppressed")))
    out.print(table)


@subscribers.command("export")
@click.option("--list", "list_name", help="The list to export.")
@click.option("--status", type=click.Choice([*(s.value for s in STATUSES), "suppressed", "all"]), default="active",
              show_default=True,
              help="active: who would be mailed; all: everyone, with their status.")
@click.option("--suppressions", is_flag=True, help="Export the suppression list instead of a list.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="File to write (default: standard output).")
@click.option("--where", "expression", default="", help="Only the members matching a segment expression.")
@pass_state
def subscribers_export(state: State, list_name: str | None, status: str, suppressions: bool,
                       out_path: str | None, expression: str) -> None:
    """Export a list (or the suppression list) as CSV; importing it elsewhere restores it."""
    if suppressions == bool(list_name):
        raise click.UsageError("give --list NAME, or --suppressions")
    target = sys.stdout if out_path is None else out_path
    if suppressions:
        count = state.nl.subscribers.export_suppressions(target)
    else:
        count = state.nl.subscribers.export_csv(list_name or "", target, None if status == "all" else status,
                                                expression)
    if out_path:
        err.print(f"{count} rows written to {out_path}")


