"""``python -m sync_core.ops``: the operator's view into the service, and the few actions an operator takes.

Settings come from ``--settings FILE`` (a ``local.settings.json``; ``./local.settings.json`` when present) with
the environment over them, or from ``--account-name NAME`` for an Azure storage account reached with your own
Azure sign-in. Tables go to stdout; ``--json`` prints one JSON document instead, for scripts (``{"error": ...}``
when the command failed). Progress of the long scans goes to stderr while it runs. Whatever the service stored or
the operator typed is printed as it is, never read as rich markup. Exit status: 0 done, 1 the command failed or a
section of ``status`` could not be read (the message says why; the other sections are still shown), 2 a usage
error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError
from requests import RequestException
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sync_core.adapters.graph import GraphError
from sync_core.failures import Failure
from sync_core.ops import actions, overview
from sync_core.ops.context import LOCAL_SETTINGS, OpsContext, SettingsError, gather_values
from sync_core.ops.replay import UnknownQueue, replay_poison
from sync_core.results import Problem

DEFAULT_LIMIT = 10
DEFAULT_SKIPS_SINCE = "7d"
PIPE_WIDTH = 200
# What reading or acting can fail with, beyond the CLI's own errors: storage, Graph, the network, the disk, and the
# service's failure vocabulary. Each is reported in one line (``--json``: an ``error`` document), never a traceback.
ERRORS = (AzureError, GraphError, RequestException, OSError, Failure)


class Ui:
    """Where output goes: rich tables on stdout, or one JSON document; progress on stderr."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        # Piped or captured, rich would assume 80 columns and fold every cell: give tables room to stay greppable.
        self.out = Console(highlight=False, width=None if sys.stdout.isatty() else PIPE_WIDTH)
        self.err = Console(stderr=True, highlight=False)

    def emit(self, data: Any, render: Callable[[], None]) -> None:
        if self.as_json:
            print(json.dumps(data, indent=2, default=_json_default))
        else:
            render()

    @contextlib.contextmanager
    def progress(self, what: str) -> Iterator[overview.Progress]:
        """A spinner on stderr while a scan runs, counting rows (shown on a terminal only)."""
        with self.err.status(f"reading {what}…") as status:

            def update(section: str, rows: int) -> None:
                status.update(f"reading {section}: {rows:,} rows")

            yield update


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _when(moment: dt.datetime | None, now: dt.datetime) -> str:
    if moment is None:
        return "-"
    seconds = (moment - now).total_seconds()
    span = abs(seconds)
    text = f"{span / 86400:.1f}d" if span >= 86400 else f"{span / 3600:.1f}h" if span >= 3600 else f"{span / 60:.0f}m"
    relative = f"in {text}" if seconds >= 0 else f"{text} ago"
    return f"{moment:%Y-%m-%d %H:%M} ({relative})"


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _short(text: str, width: int) -> str:
    """One line of at most ``width`` characters for a table, printed as it is (never read as markup)."""
    return escape(_one_line(text, width))


def _reason(exc: BaseException) -> str:
    """What went wrong, in one line, for an operator."""
    if isinstance(exc, Failure):
        return " ".join(exc.describe().split())
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


# -- sections: each gathers plain records, then renders them (status is every section in turn) ----------------

Section = tuple[dict[str, Any], Callable[[], None]]
ROLE_TO_READ = {"queues": "Storage Queue Data Reader"}  # the other sections read tables


def _section(ui: Ui, name: str, read: Callable[[], Section]) -> Section:
    """A section as read, or the reason it could not be (a missing role shows here, and the others still show)."""
    try:
        return read()
    except ClientAuthenticationError:
        raise  # no sign-in at all: nothing can be read, the command fails as a whole
    except ERRORS as exc:
        reason = _one_line(_reason(exc), 300)
        denied = isinstance(exc, HttpResponseError) and (
            exc.status_code == 403 or "AuthorizationPermissionMismatch" in str(exc)
        )
        if denied:
            reason += f" (reading {name} needs {ROLE_TO_READ.get(name, 'Storage Table Data Reader')})"
        return {"errors": {name: reason}}, lambda: ui.err.print(f"[red]{name}: could not read:[/red] {escape(reason)}")


def connections_section(ctx: OpsContext, ui: Ui) -> Section:
    with ui.progress("connections") as tick:
        rows = overview.connections(ctx.storage, tick)
    counts = overview.by_status(rows)
    now = ctx.clock.now()

    def render() -> None:
        summary = ", ".join(f"{status} {n}" for status, n in counts.items()) or "none"
        table = Table(title=f"Connections ({len(rows)}: {escape(summary)})", title_justify="left")
        for column in ("status", "address", "user", "connection", "subscription expires", "last notification"):
            table.add_column(column)
        table.add_column("reason")
        for r in rows:
            style = "red" if r.status == "needs_reconnect" else "dim" if r.status == "disconnected" else ""
            expiry = _when(r.subscription_expires_at, now) if r.status != "disconnected" else "-"
            table.add_row(
                escape(r.status), escape(r.address), escape(r.user_id), escape(r.connection_id[:12]), expiry,
                _when(r.last_notification_at, now), _short(r.reason, 40), style=style,
            )  # fmt: skip
        ui.out.print(table)

    return {"by_status": counts, "connections": rows}, render


def queues_section(ctx: OpsContext, ui: Ui) -> Section:
    depths = overview.queue_depths(ctx.storage)

    def render() -> None:
        table = Table(title="Queues (approximate counts)", title_justify="left")
        table.add_column("queue")
        table.add_column("messages", justify="right")
        table.add_column("poison", justify="right")
        for d in depths:
            table.add_row(d.queue, str(d.messages), f"[red]{d.poison}[/red]" if d.poison else "0")
        ui.out.print(table)

    return {"queues": depths}, render


def failures_section(ctx: OpsContext, ui: Ui, limit: int) -> Section:
    failures = overview.recent_failures(ctx.storage, limit)

    def render() -> None:
        table = Table(title=f"Recent failures (newest {limit} per queue)", title_justify="left")
        for column in ("at", "queue", "error", "message"):
            table.add_column(column)
        for f in failures:
            table.add_row(f"{f.at:%Y-%m-%d %H:%M:%S}", f.queue, _short(f.error, 60), _short(f.message, 50))
        if not failures:
            table.add_row("-", "-", "none recorded", "-")
        ui.out.print(table)

    return {"failures": failures}, render


def skips_section(ctx: OpsContext, ui: Ui, limit: int, since: dt.datetime) -> Section:
    with ui.progress("skips") as tick:
        found = overview.skips(ctx.storage, limit, since, tick)

    def render() -> None:
        title = f"Skips by reason since {since:%Y-%m-%d %H:%M} UTC ({found.scanned} in all)"
        reasons = Table(title=title, title_justify="left", min_width=len(title))  # a title on one line
        reasons.add_column("reason")
        reasons.add_column("messages", justify="right")
        for reason, count in found.by_reason.items():
            reasons.add_row(escape(reason), str(count))
        if not found.by_reason:
            reasons.add_row("none", "0")
        ui.out.print(reasons)
        if found.recent:
            recent = Table(title=f"Recent skips (newest {limit})", title_justify="left")
            for column in ("at", "user", "reason", "detail", "thread"):
                recent.add_column(column)
            for s in found.recent:
                recent.add_row(
                    f"{s.at:%Y-%m-%d %H:%M:%S}", escape(s.user_id), escape(s.reason), escape(s.detail),
                    escape(s.thread_id[:12]),
                )  # fmt: skip
            ui.out.print(recent)

    document = {"since": since, "scanned": found.scanned, "by_reason": found.by_reason, "recent": found.recent}
    return {"skips": document}, render


def events_section(ctx: OpsContext, ui: Ui, limit: int) -> Section:
    with ui.progress("events") as tick:
        found = overview.outbox(ctx.storage, limit, tick)
    now = ctx.clock.now()

    def render() -> None:
        oldest = f", oldest pending {_when(found.oldest_pending_at, now)}" if found.oldest_pending_at else ""
        title = f"Events to Enrollio not delivered (pending {found.pending}, refused {found.refused}{oldest})"
        table = Table(title=title, title_justify="left", min_width=len(title))
        for column in ("status", "type", "event", "written", "attempts", "next attempt", "last answer"):
            table.add_column(column)
        for e in found.recent:
            table.add_row(
                escape(e.status), escape(e.type), escape(e.event_id), _when(e.created_at, now), str(e.attempts),
                _when(e.next_attempt_at, now), _short(e.last_error, 60), style="red" if e.status == "refused" else "",
            )  # fmt: skip
        if not found.recent:
            table.add_row("-", "none", "-", "-", "-", "-", "-")
        ui.out.print(table)

    return {"events": found}, render


def _show(ui: Ui, sections: Sequence[Section]) -> int:
    """Every section (JSON: one document); 1 when one could not be read."""
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for part, _ in sections:
        errors.update(part.get("errors", {}))
        data.update({key: value for key, value in part.items() if key != "errors"})
    if errors:
        data["errors"] = errors

    def render() -> None:
        for _, show in sections:
            show()

    ui.emit(data, render)
    if errors and ui.as_json:
        for name, reason in errors.items():
            ui.err.print(f"[red]{name}: could not read:[/red] {escape(reason)}")
    return 1 if errors else 0


# -- commands --------------------------------------------------------------------------------------------------


def _since(args: argparse.Namespace, ctx: OpsContext) -> dt.datetime:
    since: Since = args.since
    return since(ctx.clock.now())


def cmd_status(ctx: OpsContext, ui: Ui, args: argparse.Namespace) -> int:
    return _show(
        ui,
        [
            _section(ui, "connections", lambda: connections_section(ctx, ui)),
            _section(ui, "queues", lambda: queues_section(ctx, ui)),
            _section(ui, "failures", lambda: failures_section(ctx, ui, args.limit)),
            _section(ui, "skips", lambda: skips_section(ctx, ui, args.limit, _since(args, ctx))),
            _section(ui, "events", lambda: events_section(ctx, ui, args.limit)),
        ],
    )


def cmd_events(ctx: OpsContext, ui: Ui, args: argparse.Namespace) -> int:
    return _show(ui, [_section(ui, "events", lambda: events_section(ctx, ui, args.limit))])


def cmd_connections(ctx: OpsContext, ui: Ui, args: argparse.Namespace) -> int:
    return _show(ui, [_section(ui, "connections", lambda: connections_section(ctx, ui))])


def cmd_queues(ctx: OpsContext, ui: Ui, args: argparse.Namespace) -> int:
    return _show(ui, [_section(ui, "queues", lambda: queues_section(ctx, ui))])


def cmd_failures(ctx: OpsContext, ui: Ui, args: argparse.Namespace) -> int:
    return _show(ui, [_section(ui, "failures", lambda: failures_section(ctx, ui, args.limit))])


def cmd_skips(ctx: OpsContext, ui: Ui, args: argparse.Namespace) -> int:
    return _show(ui, [_section(ui, "skips", lambda: skips_section(ctx, ui, args.limit, _since(args, ctx)))])


def _done(ui: Ui, data: dict[str, Any], line: str) -> int:
    ui.emit(data, lambda: ui.out.print(escape(line)))
    return 0


def cmd_resync(ctx: OpsContext, ui: Ui, args: argparse.Namespace) -> int:
    connection = actions.find_connection(ctx, args.connection, args.user)
    result = actions.resync(ctx, connection)
    return _done(ui, result, f"catch-up requested for {connection.address} ({connection.connection_id[:12]})")


def cmd_renew(ctx: OpsContext, ui: Ui, args: argparse.Namespace) -> int:
    connection = actions.find_connection(ctx, args.connection, args.user)
    result = actions.renew(ctx, connection)
    return _done(
        ui,
        result,
        f"renewal of {len(result['renewal_queued'])} subscription(s) queued for {connection.address}: the app's "
        "lifecycle worker renews it now (a 404 re-creates it; a revoked grant marks the connection needs_reconnect)",
    )


def cmd_disconnect(ctx: OpsContext, ui: Ui, args: argparse.Namespace) -> int:
    connection = actions.find_connection(ctx, args.connection, args.user)
    if not args.yes:
        if not sys.stdin.isatty():
            raise SettingsError("disconnect needs --yes when not run from a terminal")
        question = f"Disconnect {connection.address} of user {connection.user_id}? [y/N] "
        answer = ui.err.input(escape(question))
        if answer.strip().lower() not in ("y", "yes"):
            ui.err.print("nothing changed")
            return 1
    result = actions.disconnect_connection(ctx, connection)
    return _done(ui, result, f"{connection.address}: {result['status']}")


def cmd_replay_poison(ctx: OpsContext, ui: Ui, args: argparse.Namespace) -> int:
    with ui.err.status(f"replaying {escape(args.queue)}…") as status:
        report = replay_poison(
            args.queue,
            ctx.storage,
            dry_run=args.dry_run,
            progress=lambda queue, sent: status.update(f"replaying {queue}: {sent} sent"),
        )
    verb = "would replay" if args.dry_run else "replayed"

    def render() -> None:
        ui.out.print(
            f"{report.queue}: {verb} {report.replayed} message(s): {report.from_poison_queue} from "
            f"{report.queue}-poison, {report.from_failures} for {report.rows_replayed} Failures row(s)"
        )
        for row, why in report.kept.items():
            ui.out.print(f"  kept failure {escape(row)}: {escape(why)}")
        if report.error:
            ui.err.print(f"[red]stopped early: {escape(report.error)}[/red] (nothing unsent was deleted; run it again)")

    ui.emit({**dataclasses.asdict(report), "replayed": report.replayed, "dry_run": args.dry_run}, render)
    return 1 if report.error else 0


# -- arguments -------------------------------------------------------------------------------------------------

# When a skip count starts, given the time now.
Since = Callable[[dt.datetime], dt.datetime]
_AGO = re.compile(r"(\d+)([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def since_argument(text: str) -> Since:
    """``7d``, ``12h``, ``30m`` ago, or a moment (ISO 8601; UTC when it names no offset)."""
    if match := _AGO.fullmatch(text.strip()):
        span = dt.timedelta(**{_UNITS[match[2]]: int(match[1])})
        return lambda now: now - span
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a span ago (7d, 12h, 30m) nor a date and time (2026-11-30 or 2026-11-30T09:00)"
        ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return lambda now: moment


def positive_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of rows (1 or more)")
    return value


def _add_common(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument("--settings", type=Path, default=default, help="a local.settings.json")
    parser.add_argument(
        "--account-name", default=default, help="Azure storage account, reached with your Azure sign-in"
    )
    parser.add_argument("--json", action="store_true", default=default or False, help="print one JSON document")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sync_core.ops", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_common(parser, None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable[..., int], text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        # Also accepted after the command; SUPPRESS keeps what was given before it.
        _add_common(sub, argparse.SUPPRESS)
        sub.set_defaults(run=run)
        return sub

    for name, run, text in (
        ("status", cmd_status, "connections, queues, recent failures, skips by reason, undelivered events"),
        ("failures", cmd_failures, "the newest failures of each queue"),
        ("events", cmd_events, "events to Enrollio not yet delivered: pending (retrying) and refused"),
        ("skips", cmd_skips, "every user's skips by reason since a time (a scan of the Skips table), and the newest"),
    ):
        sub = command(name, run, text)
        sub.add_argument("--limit", type=positive_count, default=DEFAULT_LIMIT, help="rows per list")
        if name in ("status", "skips"):
            sub.add_argument(
                "--since",
                type=since_argument,
                default=since_argument(DEFAULT_SKIPS_SINCE),
                help=f"skips recorded since: 7d, 12h, 30m ago, or a date and time (default {DEFAULT_SKIPS_SINCE})",
            )
    command("connections", cmd_connections, "every connection, its status, subscription expiry, last notification")
    command("queues", cmd_queues, "approximate depth of each queue and its poison queue")
    for name, run, text in (
        ("resync", cmd_resync, "request a delta catch-up of a connection (the app's catch-up worker runs it)"),
        ("renew", cmd_renew, "have the app renew a connection's Graph subscription now (queued: storage access only)"),
        ("disconnect", cmd_disconnect, "disconnect a connection as Enrollio would (R8; needs the app's settings)"),
    ):
        sub = command(name, run, text)
        sub.add_argument("connection", metavar="CONNECTION", help="connection id or mailbox address (any case)")
        sub.add_argument("--user", help="the Enrollio user, when several connected the same address")
        if name == "disconnect":
            sub.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    replay = command("replay-poison", cmd_replay_poison, "send what a queue gave up on back to it, after a fix")
    replay.add_argument("queue", metavar="QUEUE", help="e.g. inbound-messages (or inbound-messages-poison)")
    replay.add_argument("--dry-run", action="store_true", help="count, send nothing, delete nothing")
    return parser


def command_names() -> list[str]:
    """Every command the CLI takes (``make status`` adds ``status`` when none is given)."""
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    return list(commands.choices)


def _fail(ui: Ui, message: str) -> int:
    """The one line saying why the command failed (stderr); with ``--json`` also ``{"error": ...}`` on stdout."""
    if ui.as_json:
        print(json.dumps({"error": message}, indent=2))
    ui.err.print(f"[red]error:[/red] {escape(message)}")
    return 1


def main(argv: Sequence[str] | None = None, environ: dict[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    ui = Ui(args.json)
    settings_file = args.settings or (LOCAL_SETTINGS if LOCAL_SETTINGS.exists() else None)
    try:
        values = gather_values(settings_file, args.account_name, os.environ if environ is None else environ)
        run: Callable[[OpsContext, Ui, argparse.Namespace], int] = args.run
        return run(OpsContext(values), ui, args)
    except (SettingsError, actions.NotFound, actions.NothingToDo, UnknownQueue, Problem) as exc:
        return _fail(ui, str(exc))
    except ClientAuthenticationError as exc:
        return _fail(ui, "no Azure sign-in to reach storage with (az login first): " + _one_line(_reason(exc), 300))
    except ERRORS as exc:
        return _fail(ui, _one_line(_reason(exc), 300))
    except KeyboardInterrupt:
        ui.err.print("interrupted")
        return 130
