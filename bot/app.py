"""The one place that builds the Telegram Application and joins it with the core."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from telegram import Bot, BotCommandScopeAllPrivateChats, Update
from telegram import error as telegram_errors
from telegram.constants import ParseMode
from telegram.error import InvalidToken, NetworkError
from telegram.ext import Application, ApplicationBuilder, ContextTypes, Defaults
from telegram.request import BaseRequest

from bot.core import Core
from bot.flood import FloodGate
from bot.leader import Leadership
from bot.ops import Incident, OpsAlerts, database_unavailable, error_type, new_incident_id
from bot.panggil import PanggilService
from bot.reminders import next_wake, tick
from bot.reports import ReportService
from bot.sender import Sender, SendStats, default_name
from bot.tindak import TindakService
from handlers import (
    ekspor,
    fallback,
    flood,
    koperasi,
    onboarding,
    panggil,
    rekap,
    report,
    router,
    schedule,
    tangani,
    undangan,
)
from handlers.common import command_menu, reply
from handlers.transport import TelegramTransport

log = logging.getLogger(__name__)

# Used when no token is configured: the local Bot API accepts any well-formed token.
LOCAL_TOKEN = "7000000001:local-simulator"  # noqa: S105 - not a secret

App = Application[Any, Any, Any, Any, Any, Any]


# Where the error handler finds the ops alerts (one per process: it remembers what it queued).
OPS_ALERTS = "ops"
_LOGGED_UPDATE_LENGTH = 2000


def install_guards(app: App) -> None:
    """The ops alerts, and flood control when the bot talks to Telegram (the simulator has one
    person at the keyboard, and the fast tests drive updates far faster than anyone types; they
    install a gate with their own clock where they test it)."""
    core: Core = app.bot_data["core"]
    app.bot_data.setdefault(OPS_ALERTS, OpsAlerts(core))
    if core.settings.telegram_bot_token is not None:
        app.bot_data.setdefault(
            flood.BOT_DATA_KEY,
            FloodGate(core.settings.flood_limit, core.settings.flood_window_seconds),
        )


def describe_update(update: object) -> str:
    """The update as JSON for the log (shortened), or its repr when it is not an Update."""
    if isinstance(update, Update):
        text = json.dumps(update.to_dict(), ensure_ascii=False, default=str)
    else:
        text = repr(update)
    if len(text) > _LOGGED_UPDATE_LENGTH:
        text = text[:_LOGGED_UPDATE_LENGTH] + "…"
    return text


def update_source(update: object, context: ContextTypes.DEFAULT_TYPE) -> tuple[str, str]:
    """What the bot was handling, for the ops alert: a command, a button's prefix, a job; never
    what the person wrote."""
    if not isinstance(update, Update):
        job = context.job
        return ("job", job.name or "") if job is not None else ("other", "")
    if update.callback_query is not None:
        data = update.callback_query.data or ""
        prefix, colon, _ = data.partition(":")
        return "button", (prefix + colon)[:20]
    message = update.effective_message
    if message is not None and message.text and message.text.startswith("/"):
        return "command", message.text.split()[0].split("@")[0][:32]
    if update.edited_message is not None:
        return "edited", ""
    if message is not None:
        return "message", ""
    return "other", ""


async def apologise(
    update: Update, context: ContextTypes.DEFAULT_TYPE, template: str, incident_id: str
) -> None:
    """Stop the button's spinner and tell the person in a private chat; never raises."""
    if update.callback_query is not None:
        with contextlib.suppress(Exception):  # already answered, or too old to answer
            await update.callback_query.answer()
    chat = update.effective_chat
    if chat is None or chat.type != chat.PRIVATE:
        return
    try:
        await reply(update, context, template, kode=incident_id)
    except Exception:  # the apology must never raise out of the error handler
        log.exception("Incident %s: could not tell the user", incident_id)


def register_handlers(app: App) -> None:
    """All handlers in one visible place. Order matters: flood control sees every update first
    (group -1; it stops the update when someone sends too fast), group chats are turned away,
    then the features, then the fallbacks that answer whatever was left."""
    install_guards(app)
    app.add_handlers(flood.build_handlers(), group=-1)
    app.add_handlers(fallback.build_group_handlers(), group=0)
    app.add_handlers(onboarding.build_handlers(), group=0)
    app.add_handlers(report.build_handlers(), group=0)
    app.add_handlers(schedule.build_handlers(), group=0)
    app.add_handlers(panggil.build_handlers(), group=0)
    app.add_handlers(undangan.build_handlers(), group=0)
    app.add_handlers(rekap.build_handlers(), group=0)
    app.add_handlers(tangani.build_handlers(), group=0)
    app.add_handlers(ekspor.build_handlers(), group=0)
    app.add_handlers(koperasi.build_handlers(), group=0)
    # Typed answers and /batal go to whatever waits for them (see handlers/router.py).
    app.add_handlers(router.build_handlers(), group=0)
    app.add_handlers(fallback.build_handlers(), group=0)
    app.add_error_handler(on_error)


async def post_init(app: App) -> None:
    core: Core = app.bot_data["core"]
    await app.bot.set_my_commands(command_menu(core), scope=BotCommandScopeAllPrivateChats())
    if core.settings.run_scheduler:
        start_background(app)
    await start_whatsapp(app)
    settle_memory()


def settle_memory() -> None:
    """Once started: what start-up made (modules, the Application, caches) lives as long as
    the process, so it is moved out of the garbage collector's way (`gc.freeze`). Otherwise
    every full collection walks it again: about 80 ms, paid by whichever update triggers it
    (docs/BENCHMARKS.md, figure 1)."""
    gc.collect()
    gc.freeze()


# The scheduler and the sender ---------------------------------------------------------------
# APScheduler (through PTB's JobQueue) only wakes `tick`; the ledger in the database decides
# what is due, so the jobs need no persistence: start-up runs one tick to catch up. Every process
# sends; of several processes only the leader (bot/leader.py) runs the calendar, and a process
# that becomes the leader catches up at once, as at start-up.
CALENDAR_NEXT = "calendar-next"
CALENDAR_HOURLY = "calendar-hourly"
SCHEDULER_LEADER = "scheduler-leader"


def start_background(app: App, *, telegram: bool = True) -> None:
    """Start the outbox sender tasks (Telegram's unless `telegram` is false: WhatsApp alone;
    WhatsApp's when it is set up), the leadership check and the calendar jobs (the Application
    must be started)."""
    core: Core = app.bot_data["core"]
    stop = asyncio.Event()
    app.bot_data["sender_stop"] = stop
    if telegram:
        sender = Sender(
            core, TelegramTransport(app.bot), lease_seconds=core.settings.outbox_lease_seconds
        )
        app.bot_data["sender"] = sender
        app.bot_data["sender_task"] = asyncio.get_running_loop().create_task(
            sender.run(stop), name="outbox-sender"
        )
    app.bot_data["leader"] = Leadership(core, default_name())
    if core.settings.whatsapp_enabled:
        # WhatsApp's rows go through a sender of their own, at the Cloud API's rate (its own
        # send budget: budgets are per channel).
        whatsapp = whatsapp_sender(core, core.settings.outbox_lease_seconds)
        app.bot_data["whatsapp_sender"] = whatsapp
        app.bot_data["whatsapp_sender_task"] = asyncio.get_running_loop().create_task(
            whatsapp.run(stop), name="outbox-sender-whatsapp"
        )
    jobs = app.job_queue
    assert jobs is not None, "python-telegram-bot[job-queue] is required"
    # The first check at once (the leader's start-up tick follows it), then every interval.
    # Not run_repeating(first=0): APScheduler moves a start already past to the next interval.
    every = core.settings.scheduler_takeover_seconds
    jobs.run_once(leadership_job, when=0, name=SCHEDULER_LEADER)
    jobs.run_repeating(leadership_job, interval=every, first=every, name=SCHEDULER_LEADER)
    # A safety net: people linked during a notice's window are told within the hour.
    jobs.run_repeating(calendar_job, interval=3600, first=3600, name=CALENDAR_HOURLY)


async def leadership_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Become or stay the scheduler's leader; a new leader ticks at once, a lost one stops."""
    leader: Leadership = context.bot_data["leader"]
    was = leader.is_leader
    now = await leader.check()
    jobs = context.job_queue
    assert jobs is not None
    if now and not was:
        jobs.run_once(calendar_job, when=0, name=CALENDAR_NEXT)
    elif was and not now:
        for job in jobs.get_jobs_by_name(CALENDAR_NEXT):
            job.schedule_removal()


async def calendar_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Decide what is due now, wake the sender, and arm the next exact wake-up (the leader
    only)."""
    leader: Leadership | None = context.bot_data.get("leader")
    if leader is not None and not leader.is_leader:
        return
    core: Core = context.bot_data["core"]
    result = await tick(core)
    reports: ReportService = context.bot_data["reports"]
    expired = await reports.expire_drafts()
    if result.messages or expired:
        for name in ("sender", "whatsapp_sender"):
            sender: Sender | None = context.bot_data.get(name)
            if sender is not None:
                sender.wake()
    if result.notices or result.outside_window:
        log.info(
            "Calendar tick at %s: %s",
            result.at.isoformat(),
            ", ".join(
                f"{n.notice.kind} {n.notice.period.key}: {n.messages}" for n in result.notices
            )
            or "nothing new",
        )
    jobs = context.job_queue
    assert jobs is not None
    for job in jobs.get_jobs_by_name(CALENDAR_NEXT):
        if job is not context.job:
            job.schedule_removal()
    jobs.run_once(calendar_job, when=await next_wake(core, core.clock.now()), name=CALENDAR_NEXT)


async def stop_background(app: App) -> None:
    await stop_whatsapp(app)
    stop: asyncio.Event | None = app.bot_data.pop("sender_stop", None)
    task: asyncio.Task[Any] | None = app.bot_data.pop("sender_task", None)
    leader: Leadership | None = app.bot_data.pop("leader", None)
    whatsapp: asyncio.Task[Any] | None = app.bot_data.pop("whatsapp_sender_task", None)
    app.bot_data.pop("whatsapp_sender", None)
    if stop is not None:
        stop.set()
    if task is not None:
        await task
    if whatsapp is not None:
        await whatsapp
    if leader is not None:
        # Another process takes over at its next check instead of waiting for a lease.
        await leader.release()


def whatsapp_sender(core: Core, lease_seconds: float) -> Sender:
    """A Sender of the WhatsApp channel's rows, at WHATSAPP_RATE_PER_SECOND."""
    from handlers.whatsapp.transport import WhatsAppTransport

    return Sender(
        core,
        WhatsAppTransport(core),
        rate=core.settings.whatsapp_rate_per_second,
        lease_seconds=lease_seconds,
    )


async def send_due(core: Core) -> SendStats:
    """Send what the outbox holds that is due now, once, on every channel that is set up (for
    `koperasi-bot tick`)."""
    stats = SendStats()
    if core.settings.telegram_bot_token is not None:
        app = build_application(core)
        async with app:
            stats = await send_due_with(core, app.bot)
    if core.settings.whatsapp_enabled:
        more = await whatsapp_sender(core, core.settings.outbox_lease_seconds).drain()
        stats.sent += more.sent
        stats.retried += more.retried
        stats.unreachable += more.unreachable
        stats.failed += more.failed
    return stats


async def send_due_with(core: Core, bot: Bot) -> SendStats:
    return await Sender(core, TelegramTransport(bot)).drain()


def _api_hiccup(error: BaseException) -> bool:
    """A 5xx, a dropped connection, a timeout or a 429 from the Bot API (not a refusal)."""
    if isinstance(error, telegram_errors.RetryAfter):
        return True
    return isinstance(error, telegram_errors.NetworkError) and not isinstance(
        error, telegram_errors.BadRequest
    )


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Every exception a handler or job let through. It is logged with the update and a short
    incident id; the person (private chat) is told that id, or to try again shortly when the
    database was briefly away (the transaction was rolled back, the pool reconnects by itself);
    officers with the ops flag get one alert per error type per 10 minutes, via the outbox."""
    error = context.error
    if error is None:
        return
    if isinstance(error, telegram_errors.Forbidden):
        # The person blocked the bot while it answered: nobody to tell, nothing to fix.
        log.info("A chat refused an answer (%s) while handling %s", error, describe_update(update))
        return
    if update is None and _api_hiccup(error):
        # getUpdates failed: PTB retries with growing pauses. A short outage of Telegram or
        # of the network is no incident; what a handler could not send is retried there.
        log.warning("Bot API unavailable while fetching updates (%s); retrying", error)
        return
    incident_id = new_incident_id()
    database = database_unavailable(error)
    if database:
        log.warning(
            "Incident %s: database unavailable while handling %s",
            incident_id,
            describe_update(update),
            exc_info=error,
        )
    else:
        log.error(
            "Incident %s: unexpected error while handling %s",
            incident_id,
            describe_update(update),
            exc_info=error,
        )
    if isinstance(update, Update):
        template = "error_db_unavailable" if database else "error_generic"
        await apologise(update, context, template, incident_id)
    alerts = context.bot_data.get(OPS_ALERTS)
    if isinstance(alerts, OpsAlerts):
        source, detail = update_source(update, context)
        await alerts.alert(Incident(incident_id, error_type(error), database, source, detail))


def build_application(
    core: Core, request: BaseRequest | None = None, *, token: str | None = None
) -> App:
    settings = core.settings
    token = token or (
        settings.telegram_bot_token.get_secret_value()
        if settings.telegram_bot_token
        else LOCAL_TOKEN
    )
    builder = (
        ApplicationBuilder()
        .token(token)
        .base_url(f"{settings.telegram_api_base_url}/bot")
        .base_file_url(f"{settings.telegram_api_base_url}/file/bot")
        .defaults(Defaults(parse_mode=ParseMode.HTML, tzinfo=settings.tz))
        .post_init(post_init)
        .post_stop(stop_background)
    )
    if request is not None:
        builder = builder.request(request).get_updates_request(request)
    app = builder.build()
    app.bot_data["core"] = core
    app.bot_data["reports"] = ReportService(core)
    app.bot_data["panggil"] = PanggilService(core)
    app.bot_data["tindak"] = TindakService(core)
    register_handlers(app)
    return app


# The WhatsApp channel -------------------------------------------------------------------------
# A second Application with the same handlers, whose Bot speaks the WhatsApp Cloud API through
# handlers/whatsapp/bridge.py, fed by the WhatsApp webhook (handlers/whatsapp/webhook.py) on
# WHATSAPP_LISTEN. It runs beside the Telegram Application, started at the end of its post_init
# and stopped at the start of its stop_background, in polling and in webhook mode alike; the
# scheduler, the senders and the command menu stay the Telegram Application's.
WHATSAPP_APP = "whatsapp_app"
WHATSAPP_SERVER = "whatsapp_server"


def build_whatsapp_application(core: Core) -> App:
    from handlers.whatsapp.bridge import BOT_TOKEN, WhatsAppBotAPI

    settings = core.settings
    assert settings.whatsapp_phone_number_id is not None
    assert settings.whatsapp_access_token is not None
    request = WhatsAppBotAPI(
        base_url=settings.whatsapp_api_base_url,
        phone_number_id=settings.whatsapp_phone_number_id,
        access_token=settings.whatsapp_access_token.get_secret_value(),
        messages=core.messages,
    )
    app = build_application(core, request, token=BOT_TOKEN)
    app.bot_data["channel"] = "whatsapp"
    app.post_init = None
    app.post_stop = None
    return app


async def start_whatsapp(app: App) -> None:
    """Serve the WhatsApp channel beside `app` (the Telegram Application) when it is
    configured; without a Telegram token (the simulator) it stays off."""
    core: Core = app.bot_data["core"]
    settings = core.settings
    if not settings.whatsapp_enabled or settings.telegram_bot_token is None:
        return
    if app.bot_data.get(WHATSAPP_SERVER) is not None:
        return
    from bot.config import _split_listen
    from handlers.whatsapp.webhook import WhatsAppServer

    whatsapp = build_whatsapp_application(core)
    server = WhatsAppServer(whatsapp, core)
    await whatsapp.initialize()
    try:
        host, port = _split_listen(settings.whatsapp_listen)
        server.listen(host, port)
    except OSError as exc:
        await whatsapp.shutdown()
        raise StartupError("wa_listen", f"{settings.whatsapp_listen}: {exc.strerror}") from None
    app.bot_data[WHATSAPP_APP] = whatsapp
    app.bot_data[WHATSAPP_SERVER] = server
    log.info("WhatsApp webhook listening on %s", settings.whatsapp_listen)


def run_whatsapp(core: Core) -> None:
    """Run on WhatsApp alone (no Telegram token) until SIGTERM or SIGINT."""
    asyncio.run(serve_whatsapp(core))


async def serve_whatsapp(core: Core, stop: asyncio.Event | None = None) -> None:
    """WhatsApp without Telegram: the WhatsApp Application with the scheduler and the WhatsApp
    sender, its webhook on WHATSAPP_LISTEN, until `stop` is set (by default on SIGTERM or
    SIGINT)."""
    from bot.config import _split_listen
    from handlers.whatsapp.webhook import WhatsAppServer

    app = build_whatsapp_application(core)
    server = WhatsAppServer(app, core)
    with _stopped_by_signals(stop) as stop:
        await app.initialize()
        try:
            host, port = _split_listen(core.settings.whatsapp_listen)
            try:
                server.listen(host, port)
            except OSError as exc:
                raise StartupError(
                    "wa_listen", f"{core.settings.whatsapp_listen}: {exc.strerror}"
                ) from None
            await app.start()
            if core.settings.run_scheduler:
                start_background(app, telegram=False)
            settle_memory()
            log.info("WhatsApp webhook listening on %s", core.settings.whatsapp_listen)
            await stop.wait()
        finally:
            await server.stop()
            if app.running:
                await app.stop()
            await stop_background(app)
            await app.shutdown()


@contextmanager
def _stopped_by_signals(stop: asyncio.Event | None) -> Iterator[asyncio.Event]:
    """`stop`, or when none is given a new event set on SIGTERM or SIGINT (the handlers are
    removed again on the way out)."""
    if stop is not None:
        yield stop
        return
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def stop_whatsapp(app: App) -> None:
    """Stop taking WhatsApp notifications, finish those under way, close the channel."""
    server = app.bot_data.pop(WHATSAPP_SERVER, None)
    whatsapp: App | None = app.bot_data.pop(WHATSAPP_APP, None)
    if server is not None:
        await server.stop()
    if whatsapp is not None:
        await whatsapp.shutdown()


class StartupError(Exception):
    """The bot could not start; `code` picks the sentence in the cli_startup_error template."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


@contextmanager
def startup_errors() -> Iterator[None]:
    """Telegram refusing the token or not answering, as a StartupError for the CLI."""
    try:
        yield
    except InvalidToken as exc:
        raise StartupError("token", str(exc)) from None
    except NetworkError as exc:
        raise StartupError("network", str(exc)) from None


def run_polling(core: Core) -> None:
    """Run on Telegram with long polling until interrupted."""
    app = build_application(core)
    with startup_errors():
        app.run_polling(allowed_updates=Update.ALL_TYPES, drop_pending_updates=False)


def run_webhook(core: Core) -> None:
    """Run on Telegram with a webhook (`run --webhook`) until SIGTERM or SIGINT."""
    with startup_errors():
        asyncio.run(serve_webhook(core))


async def open_sender(core: Core, lease_seconds: float) -> tuple[App, Sender]:
    """An initialized Application that is never started (no polling, no calendar jobs) and
    a Sender over its bot, for `koperasi-bot send`. Raises StartupError."""
    app = build_application(core)
    try:
        with startup_errors():
            await app.initialize()
    except StartupError:
        await app.bot.shutdown()
        raise
    return app, Sender(core, TelegramTransport(app.bot), lease_seconds=lease_seconds)


async def serve_webhook(core: Core, stop: asyncio.Event | None = None) -> None:
    """Serve the webhook until `stop` is set (by default on SIGTERM or SIGINT).

    The same life cycle as PTB's run_polling: initialize, post_init (the command menu, the
    scheduler and the outbox sender), the server and setWebhook, start; on the way out the
    server stops taking requests before the Application finishes what it was given, then
    post_stop stops the sender.
    """
    # Imported here: polling needs neither tornado nor these.
    from telegram.error import BadRequest, Forbidden, TelegramError

    from handlers.webhook import WebhookServer

    settings = core.settings
    settings.check_webhook()
    assert settings.webhook_url is not None
    assert settings.webhook_secret is not None
    secret = settings.webhook_secret.get_secret_value()
    app = build_application(core)
    server = WebhookServer(app, settings.webhook_path, secret)
    with _stopped_by_signals(stop) as stop:
        try:
            await app.initialize()
        except TelegramError:
            await app.bot.shutdown()
            raise
        try:
            if app.post_init is not None:
                await app.post_init(app)
            host, port = settings.webhook_address
            try:
                server.listen(host, port)
            except OSError as exc:
                raise StartupError("listen", f"{settings.webhook_listen}: {exc.strerror}") from None
            try:
                # The webhook stays set when the bot stops: Telegram keeps the updates that
                # arrive meanwhile and delivers them once the bot is back.
                await app.bot.set_webhook(
                    settings.webhook_url,
                    secret_token=secret,
                    allowed_updates=Update.ALL_TYPES,
                    drop_pending_updates=False,
                )
            except (BadRequest, Forbidden) as exc:  # e.g. "Bad webhook: ..." from Telegram
                raise StartupError("webhook", exc.message) from None
            await app.start()
            log.info(
                "Webhook %s set; listening on %s", settings.webhook_url, settings.webhook_listen
            )
            await stop.wait()
        finally:
            await server.stop()
            if app.running:
                await app.stop()
                if app.post_stop is not None:
                    await app.post_stop(app)
            await stop_background(app)  # when stopped between post_init and start
            await app.shutdown()


async def bot_username(core: Core) -> str:
    """The bot's @username for deep links: from settings, else asked from Telegram."""
    if core.settings.telegram_bot_username:
        return core.settings.telegram_bot_username
    if core.settings.telegram_bot_token is None:
        from handlers.local_api import BOT_USERNAME

        return BOT_USERNAME
    app = build_application(core)
    async with app:
        return str(app.bot.username)
