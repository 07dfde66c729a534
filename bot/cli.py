"""The `koperasi-bot` command line: registry, invites, officers, export, calendar, the bot."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bot import officers, onboarding, registry
from bot.config import ConfigError, Settings, load_settings
from bot.core import Core
from bot.outbox import sending_window
from messages import Messages
from storage import migrate

log = logging.getLogger("bot")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="koperasi-bot",
        description="Koperasi Merah Putih reporting bot: registry, invites, officers, the bot.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    init = sub.add_parser("init", help="migrate the database; optionally load the sample registry")
    sample = init.add_mutually_exclusive_group()
    sample.add_argument("--sample", action="store_true", help="load the Kota Serang sample")
    sample.add_argument(
        "--sample-if-empty",
        action="store_true",
        help="load the Kota Serang sample only when the registry is empty",
    )

    imp = sub.add_parser("import-coops", help="import or update cooperatives from CSV or XLSX")
    imp.add_argument("file", type=Path)

    inv = sub.add_parser("invite", help="create a single-use invite for a board member")
    inv.add_argument("--coop", help="Kemendagri code, e.g. 36.73.04.1007")
    inv.add_argument("--role", help="role code, e.g. bendahara (see `roles`)")
    inv.add_argument(
        "--same-as",
        metavar="CHANNEL:ID",
        help="instead of --coop/--role: add a chat on another channel to the board member "
        "already linked at CHANNEL:ID (e.g. telegram:123456789 or whatsapp:6281234567890), "
        "so they get each message once, where they last wrote",
    )
    inv.add_argument("--title", help='the title as the cooperative uses it, e.g. "Ketua I"')
    inv.add_argument("--days", type=int, help="days until it expires (default INVITE_TTL_DAYS)")
    inv.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    inv.add_argument(
        "--channel",
        choices=("telegram", "whatsapp"),
        default="telegram",
        help="the link to give: a t.me link (default) or a wa.me link to the business number "
        "with DAFTAR <code> typed in (needs WHATSAPP_BUSINESS_NUMBER)",
    )

    officer = sub.add_parser("officer", help="city officers")
    osub = officer.add_subparsers(dest="officer_command", required=True)
    add = osub.add_parser("add", help="register or update a city officer")
    add.add_argument("--telegram-id", required=True)
    add.add_argument("--name", required=True)
    add.add_argument("--kecamatan", help="scope to one kecamatan (default: the whole city)")
    add.add_argument("--can-broadcast", action="store_true", help="may send summons")
    add.add_argument(
        "--ops", action="store_true", help="is alerted when the bot fails (ops alerts)"
    )
    osub.add_parser("list", help="list officers")

    exp = sub.add_parser(
        "export",
        help="export the reports of a month or a range of months (CSV or XLSX)",
        description="xlsx: one workbook with the sheets Laporan (a row per cooperative per "
        "month), Kendala (obstacle counts per month and kecamatan) and Riwayat (reminders "
        "and summons with their delivery and answers). csv: one month keeps the usual "
        "columns; a range gives one file, month after month, with a leading `periode` column.",
    )
    exp.add_argument(
        "--period",
        required=True,
        help="the month YYYY-MM (e.g. 2026-10), or a range YYYY-MM..YYYY-MM "
        "(e.g. 2026-08..2026-10, both included, at most 36 months)",
    )
    exp.add_argument("--format", help="csv or xlsx (default: from the --out suffix, else csv)")
    exp.add_argument("--out", required=True, type=Path, help="the file to write")
    exp.add_argument("--kecamatan", help="only this kecamatan (name or code; default all)")

    sub.add_parser("roles", help="list board roles usable with `invite --role`")

    schedule = sub.add_parser(
        "schedule", help="list the reporting notices due next (times local, WIB)"
    )
    schedule.add_argument("--at", help="show the calendar as at this moment (default now)")
    tick = sub.add_parser(
        "tick", help="decide and queue, once, whatever notice is due (as the scheduler does)"
    )
    tick.add_argument(
        "--at",
        help="the moment to act as, ISO 8601, e.g. 2026-12-05T09:00 (local time unless an "
        "offset is given; default now)",
    )
    tick.add_argument(
        "--no-send",
        action="store_true",
        help="only queue; leave sending to the running bot",
    )
    run = sub.add_parser("run", help="start the bot (Telegram if a token is set, else simulator)")
    how = run.add_mutually_exclusive_group()
    how.add_argument(
        "--simulator", action="store_true", help="the local simulator even with a token"
    )
    how.add_argument(
        "--webhook",
        action="store_true",
        help="receive updates by webhook instead of long polling: Telegram POSTs to "
        "WEBHOOK_URL, served on WEBHOOK_LISTEN, each request checked against WEBHOOK_SECRET",
    )
    sub.add_parser("simulate", help="start the local chat simulator")
    send = sub.add_parser(
        "send",
        help="only send the outbox (no calendar, no polling): a process that adds sending "
        "capacity; several may run on PostgreSQL",
    )
    send.add_argument(
        "--once", action="store_true", help="send what is due now, print the counts and exit"
    )
    send.add_argument(
        "--channel",
        choices=("telegram", "whatsapp"),
        default="telegram",
        help="whose messages to send: Telegram's (default) or WhatsApp's (needs the WHATSAPP_* "
        "settings); run one process per channel",
    )
    send.add_argument(
        "--lease-seconds",
        type=float,
        default=60.0,
        help="how long a claimed message stays reserved for this process; if it dies, another "
        "sender takes the message over after this long (default 60)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # PTB 22 reports RetryAfter as a timedelta only when asked; the int form is deprecated.
    os.environ.setdefault("PTB_TIMEDELTA", "1")
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(Messages().render("cli_config_error", error=str(exc)), file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Per-request and per-migration INFO lines drown what the person asked for.
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    messages = Messages(settings.language, settings.tz)
    command = args.command
    webhook = command == "run" and args.webhook
    if webhook:
        try:
            settings.check_webhook()
        except ConfigError as exc:
            print(messages.render("cli_config_error", error=str(exc)), file=sys.stderr)
            return 2
    if command in ("init", "run", "simulate"):
        migrate.upgrade(settings.database_url)
    if command == "run" and settings.telegram_bot_token and not args.simulator:
        from bot.app import run_polling, run_webhook

        if webhook:
            print(
                messages.render(
                    "cli_run_webhook",
                    url=settings.webhook_url,
                    listen=settings.webhook_listen,
                    database=_shown(settings),
                ),
                file=sys.stderr,
            )
        else:
            print(messages.render("cli_run_polling", database=_shown(settings)), file=sys.stderr)
        if settings.whatsapp_enabled:
            print(
                messages.render("wa_cli_run", listen=settings.whatsapp_listen, alone=False),
                file=sys.stderr,
            )
        return _serve(
            run_webhook if webhook else run_polling,
            settings,
            messages,
            settings.telegram_api_base_url,
        )
    if command == "run" and settings.whatsapp_enabled and not args.simulator and not webhook:
        # WhatsApp alone: no Telegram token, the WhatsApp settings given.
        from bot.app import run_whatsapp

        print(
            messages.render("wa_cli_run", listen=settings.whatsapp_listen, alone=True),
            file=sys.stderr,
        )
        return _serve(run_whatsapp, settings, messages, settings.whatsapp_api_base_url)
    if command == "run":
        if not args.simulator:
            print(messages.render("cli_token_hint"), file=sys.stderr)
        command = "simulate"
    return asyncio.run(_async_main(command, args, settings))


def _serve(
    run: Callable[[Core], None], settings: Settings, messages: Messages, api_url: str
) -> int:
    """Run the bot with `run(core)` until it stops; a start-up failure is one line (exit 1)."""
    from bot.app import StartupError

    try:
        run(Core.create(settings))
    except StartupError as exc:
        print(
            messages.render("cli_startup_error", code=exc.code, detail=exc.detail, url=api_url),
            file=sys.stderr,
        )
        return 1
    return 0


def _shown(settings: Settings) -> str:
    """The database URL without a password, for messages."""
    url = settings.database_url
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}@{host}"
    return url


async def _async_main(command: str, args: argparse.Namespace, settings: Settings) -> int:
    core = Core.create(settings)
    try:
        handler = _COMMANDS[command]
        return await handler(core, args)
    finally:
        await core.close()


def _out(core: Core, template: str, **values: Any) -> None:
    text = core.messages.render(template, **values)
    if text:
        print(text)


def _err(core: Core, template: str, **values: Any) -> None:
    print(core.messages.render(template, **values), file=sys.stderr)


async def _init(core: Core, args: argparse.Namespace) -> int:
    count = await registry.count_koperasi(core.db)
    sample, report = "none", None
    if args.sample or (args.sample_if_empty and count == 0):
        report = await registry.import_file(
            core.db, registry.SAMPLE_REGISTRY, core.clock.now(), "cli:init"
        )
        sample = "loaded"
    elif args.sample_if_empty:
        sample = "skipped"
    _out(
        core,
        "cli_init_done",
        database=_shown(core.settings),
        sample=sample,
        report=report,
        count=count,
    )
    return 0


async def _import(core: Core, args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        report = await registry.import_file(core.db, path, core.clock.now(), "cli:import-coops")
    except (FileNotFoundError, IsADirectoryError):
        _err(core, "cli_import_file_error", code="not_found", file=path, value="")
        return 2
    except registry.RegistryFileError as exc:
        _err(core, "cli_import_file_error", code=exc.code, file=path, value=exc.value)
        return 2
    except (OSError, UnicodeDecodeError, ValueError, KeyError) as exc:
        # openpyxl raises several kinds for a file that is not really a workbook.
        _err(core, "cli_import_file_error", code="unreadable", file=path, value=str(exc))
        return 2
    _out(core, "cli_import", file=path, report=report)
    return 1 if report.errors else 0


async def _invite(core: Core, args: argparse.Namespace) -> int:
    from datetime import timedelta

    from bot.app import bot_username

    if args.days is not None and not 1 <= args.days <= 365:
        _err(core, "cli_invite_error", code="bad_days", value=str(args.days))
        return 2
    whatsapp = getattr(args, "channel", "telegram") == "whatsapp"
    if whatsapp and not core.settings.whatsapp_business_number:
        _err(core, "cli_invite_error", code="no_business_number")
        return 2
    ttl = timedelta(days=args.days) if args.days else None
    if bool(args.same_as) == bool(args.coop or args.role) or (
        not args.same_as and not (args.coop and args.role)
    ):
        _err(core, "cli_invite_error", code="coop_or_same_as")
        return 2
    try:
        if args.same_as:
            channel, _, external_id = args.same_as.partition(":")
            if channel not in ("telegram", "whatsapp") or not external_id.strip():
                raise onboarding.InviteError("bad_same_as", args.same_as)
            invite = await onboarding.create_channel_invite(
                core,
                channel=channel,
                external_id=external_id.strip(),
                created_by="cli:invite",
                ttl=ttl,
            )
        else:
            invite = await onboarding.create_invite(
                core,
                koperasi_kode=args.coop,
                role=args.role,
                judul=args.title,
                created_by="cli:invite",
                ttl=ttl,
            )
    except onboarding.InviteError as exc:
        _err(core, "cli_invite_error", code=exc.code, value=exc.value)
        return 2
    if whatsapp:
        # The chat opens with "DAFTAR <code>" typed in; sending it links the account.
        link = f"https://wa.me/{core.settings.whatsapp_business_number}?text=DAFTAR%20{invite.code}"
    else:
        link = f"https://t.me/{await bot_username(core)}?start={invite.code}"
    _out(core, "cli_invite", invite=invite, link=link)
    if args.json:
        print(
            json.dumps(
                {
                    "code": invite.code,
                    "link": link,
                    "koperasi_kode": invite.koperasi_kode,
                    "jabatan": invite.jabatan,
                    "expires_at": invite.expires_at.isoformat(),
                }
            )
        )
    return 0


async def _officer(core: Core, args: argparse.Namespace) -> int:
    if args.officer_command == "list":
        _out(core, "cli_officer_list", officers=await officers.list_officers(core))
        return 0
    try:
        saved = await officers.add_officer(
            core,
            telegram_id=args.telegram_id,
            nama=args.name,
            kecamatan=args.kecamatan,
            can_broadcast=args.can_broadcast,
            ops=args.ops,
            actor="cli:officer",
        )
    except officers.OfficerError as exc:
        _err(core, "cli_officer_error", code=exc.code, value=exc.value)
        return 2
    _out(core, "cli_officer_saved", saved=saved)
    return 0


async def _export(core: Core, args: argparse.Namespace) -> int:
    from bot.export import ExportError, export_xlsx, parse_period_range, write_csv
    from bot.registry import find_kecamatan

    out: Path = args.out
    fmt = (args.format or ("xlsx" if out.suffix.lower() == ".xlsx" else "csv")).lower()
    try:
        if fmt not in ("csv", "xlsx"):
            raise ExportError("format", args.format)
        periods = parse_period_range(args.period)
    except ExportError as exc:
        _err(core, "cli_export", error=exc.code, period=args.period, value=exc.value)
        return 2
    kecamatan_id, kecamatan = None, None
    if args.kecamatan:
        async with core.db.sessions() as session:
            found = await find_kecamatan(session, args.kecamatan)
        if found is None:
            _err(core, "cli_export", error="kecamatan", period=args.period, value=args.kecamatan)
            return 2
        kecamatan_id, kecamatan = found.id, found.nama
    language = core.messages.language
    try:
        if fmt == "xlsx":
            count = (await export_xlsx(core, periods, out, kecamatan_id)).rows
        else:
            count = await write_csv(core, periods, out, kecamatan_id)
    except OSError as exc:
        _err(core, "cli_export", error="out", period=args.period, value=f"{out}: {exc.strerror}")
        return 2
    _out(
        core,
        "cli_export",
        error="",
        period=periods[0].name(language),
        until=periods[-1].name(language) if len(periods) > 1 else None,
        count=count,
        file=out,
        format=fmt,
        kecamatan=kecamatan,
    )
    return 0


async def _roles(core: Core, args: argparse.Namespace) -> int:
    _out(core, "cli_roles", roles=await onboarding.list_jabatan(core))
    return 0


async def _simulate(core: Core, args: argparse.Namespace) -> int:
    from bot.app import build_application, start_background, stop_background
    from handlers.local_api import LocalBotAPI
    from handlers.simulator import Simulator

    # The terminal is the chat: keep the scheduler's start/stop lines out of it.
    for noisy in ("apscheduler", "telegram.ext"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    api = LocalBotAPI()
    app = build_application(core, request=api)
    interactive = sys.stdin.isatty()

    async def read_line() -> str | None:
        if interactive:
            print("Anda> ", end="", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        return line or None

    async with app:
        # The simulator runs the scheduler and the sender like the real bot does.
        await app.start()
        if core.settings.run_scheduler:
            start_background(app)
        try:
            await Simulator(
                core,
                app,
                api,
                read_line,
                lambda text: print(text, flush=True),
                echo_input=not interactive,
            ).run()
        finally:
            await app.stop()
            await stop_background(app)
    _out(core, "sim_bye", database=_shown(core.settings))
    return 0


async def _schedule(core: Core, args: argparse.Namespace) -> int:
    from bot import reminders
    from bot.clock import parse_moment
    from bot.outbox import status_counts

    now = core.clock.now()
    if args.at:
        moment = parse_moment(args.at, core.settings.tz)
        if moment is None:
            _err(core, "cli_tick", error="at", value=args.at)
            return 2
        now = moment
    settings = core.settings
    upcoming = reminders.upcoming(settings, now, 6)
    due = reminders.due_notices(settings, now)
    periods = sorted({n.period for n in [*upcoming, *due]})
    async with core.db.sessions() as session:
        decided = await reminders.decided(session, periods)
        outbox = await status_counts(session)
    _out(
        core,
        "cli_schedule",
        now=now,
        due=due,
        upcoming=upcoming,
        decided=decided,
        outbox=outbox,
        window=sending_window(settings),
        in_window=sending_window(settings).contains(now),
        bahasa=core.messages.language,
    )
    return 0


async def _tick(core: Core, args: argparse.Namespace) -> int:
    from bot import reminders
    from bot.clock import FixedClock, parse_moment

    at = core.clock.now()
    if args.at:
        moment = parse_moment(args.at, core.settings.tz)
        if moment is None:
            _err(core, "cli_tick", error="at", value=args.at)
            return 2
        at = moment
        core.clock = FixedClock(at)
    result = await reminders.tick(core, at)
    stats = None
    channel = core.settings.telegram_bot_token is not None or core.settings.whatsapp_enabled
    if not args.no_send and channel:
        from bot.app import send_due

        stats = await send_due(core)
    _out(
        core,
        "cli_tick",
        error="",
        result=result,
        stats=stats,
        token=channel,
        no_send=args.no_send,
        bahasa=core.messages.language,
    )
    return 0


# `send --lease-seconds`: short enough to test a takeover, long enough for a slow answer.
MIN_LEASE_SECONDS = 1.0
MAX_LEASE_SECONDS = 3600.0


async def _send(core: Core, args: argparse.Namespace) -> int:
    import signal

    from bot.app import StartupError, open_sender, whatsapp_sender

    settings = core.settings
    whatsapp = getattr(args, "channel", "telegram") == "whatsapp"
    if whatsapp and not settings.whatsapp_enabled:
        _err(core, "cli_send", event="whatsapp")
        return 2
    if not whatsapp and settings.telegram_bot_token is None:
        _err(core, "cli_send", event="token")
        return 2
    if not MIN_LEASE_SECONDS <= args.lease_seconds <= MAX_LEASE_SECONDS:
        _err(
            core,
            "cli_send",
            event="lease",
            value=args.lease_seconds,
            low=MIN_LEASE_SECONDS,
            high=MAX_LEASE_SECONDS,
        )
        return 2
    app: Any = None
    try:
        if whatsapp:
            sender = whatsapp_sender(core, args.lease_seconds)
        else:
            app, sender = await open_sender(core, args.lease_seconds)
    except StartupError as exc:
        # InvalidToken's text repeats the token: the template shows the detail only otherwise.
        _err(
            core,
            "cli_startup_error",
            code=exc.code,
            detail=exc.detail,
            url=settings.telegram_api_base_url,
        )
        return 1
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        stop.set()

    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        if not args.once:
            _err(
                core,
                "cli_send",
                event="start",
                name=sender.name,
                rate=sender.rate,
                lease=args.lease_seconds,
                database=_shown(settings),
            )
            # On a signal the sender hands back what it has not started and records the
            # sends already under way before it returns.
            await sender.run(stop)
            _err(core, "cli_send", event="stopped", name=sender.name)
            return 0
        # `drain` has no stop event of its own: a signal cancels it, and the messages it
        # still holds go out again once their lease runs out.
        draining = asyncio.create_task(sender.drain())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({draining, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)
        if not draining.done():
            draining.cancel()
            await asyncio.gather(draining, return_exceptions=True)
            _err(core, "cli_send", event="interrupted", lease=args.lease_seconds)
            return 128 + received[0]
        _out(core, "cli_send", event="stats", stats=draining.result())
        return 0
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        if app is not None:
            await app.shutdown()


_COMMANDS = {
    "init": _init,
    "import-coops": _import,
    "invite": _invite,
    "officer": _officer,
    "roles": _roles,
    "export": _export,
    "schedule": _schedule,
    "tick": _tick,
    "simulate": _simulate,
    "send": _send,
}
