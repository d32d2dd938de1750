"""`schedule …` and `scheduler`: pinned sends, what is scheduled, and the loop that runs them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .base import Group, State, cli, list_option, out, pass_state, settled_heap, show_time, stop_on_signals

if TYPE_CHECKING:
    from ..app import DuePlan

def print_plan(plan: DuePlan) -> None:
    """What the due rule makes of each issue: due now, missed, left alone (and how to send by hand)."""
    for item in plan.due:
        out.print(f"due now: {item.path} ({item.why})", markup=False)
    for passed in plan.missed:
        out.print(f"MISSED: {passed.pin.job_id if passed.pin else passed.path} ({passed.why}): "
                  f"`send --due` reports it and exits 1", markup=False)
    for passed in plan.skipped:
        out.print(f"{passed.path}: {passed.why}", markup=False)


class _ScheduleGroup(Group):
    """`schedule ISSUE --at TIME` pins a send; `schedule list` and `schedule cancel ID` manage them."""

    def resolve_command(self, ctx: click.Context, args: list[str]):  # type: ignore[no-untyped-def]
        if args and args[0] not in self.commands:
            args = ["add", *args]
        return super().resolve_command(ctx, args)


@cli.group(cls=_ScheduleGroup)
def schedule() -> None:
    """Pin an issue to a time, list what is scheduled, cancel a pinned send."""


@schedule.command("add", hidden=True)
@click.argument("issue", type=click.Path())
@click.option("--at", "at", required=True, help="'YYYY-MM-DD HH:MM' in the schedule's time zone.")
@list_option
@pass_state
def schedule_add(state: State, issue: str, at: str, list_name: str | None) -> None:
    """Pin a send of ISSUE to a time."""
    job_id, when = state.nl.schedule.pin(issue, at, list_name)
    out.print(f"{job_id}: {issue} at {show_time(when)}", markup=False)


@schedule.command("list")
@pass_state
def schedule_list_command(state: State) -> None:
    """What is scheduled and when it runs next, in the schedule's zone and UTC."""
    scheduled = state.nl.schedule.timetable()
    for run in scheduled.runs:
        out.print(f"{run.id}  " + (f"next at {show_time(run.next_run)}" if run.next_run else "paused")
                  + f"  {run.description}", markup=False)
    if scheduled.plan is not None:
        print_plan(scheduled.plan)


@schedule.command("cancel")
@click.argument("job_id")
@pass_state
def schedule_cancel(state: State, job_id: str) -> None:
    """Remove a pinned send."""
    state.nl.schedule.cancel(job_id)
    out.print(f"cancelled {job_id}", markup=False)


@cli.command("scheduler")
@list_option
@pass_state
def scheduler_command(state: State, list_name: str | None) -> None:
    """Run the weekly schedule and pinned sends until SIGTERM or Ctrl-C."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)  # not every wake-up
    with settled_heap(), stop_on_signals() as stop:
        state.nl.schedule.run(list_name, stop=stop)


