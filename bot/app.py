"""The one place that builds the Telegram Application and joins it with the core."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from telegram import Bot, BotCommandScopeAllPrivateChats, Update
from telegram.constants import ParseMode
from telegram.error import InvalidToken, NetworkError
from telegram.ext import Application, ApplicationBuilder, ContextTypes, Defaults
from telegram.request import BaseRequest

from bot.core import Core
from bot.panggil import PanggilService
from bot.reminders import next_wake, tick
from bot.reports import ReportService
from bot.sender import Sender, SendStats
from bot.tindak import TindakService
from handlers import (
    ekspor,
    fallback,
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


def register_handlers(app: App) -> None:
    """All handlers in one visible place. Order matters: group chats are turned away first,
    then the features, then the fallbacks that answer whatever was left."""
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


# The scheduler and the sender ---------------------------------------------------------------
# APScheduler (through PTB's JobQueue) only wakes `tick`; the ledger in the database decides
# what is due, so the jobs need no persistence: start-up runs one tick to catch up.
CALENDAR_NEXT = "calendar-next"
CALENDAR_HOURLY = "calendar-hourly"


def start_background(app: App) -> None:
    """Start the outbox sender task and the calendar jobs (the Application must be started)."""
    core: Core = app.bot_data["core"]
    sender = Sender(core, TelegramTransport(app.bot))
    stop = asyncio.Event()
    app.bot_data["sender"] = sender
    app.bot_data["sender_stop"] = stop
    app.bot_data["sender_task"] = asyncio.get_running_loop().create_task(
        sender.run(stop), name="outbox-sender"
    )
    jobs = app.job_queue
    assert jobs is not None, "python-telegram-bot[job-queue] is required"
    jobs.run_once(calendar_job, when=0, name=CALENDAR_NEXT)
    # A safety net: people linked during a notice's window are told within the hour.
    jobs.run_repeating(calendar_job, interval=3600, first=3600, name=CALENDAR_HOURLY)


async def calendar_job(context: ContextTypes.DEFAULT_TYPE) -> None:
    """Decide what is due now, wake the sender, and arm the next exact wake-up."""
    core: Core = context.bot_data["core"]
    result = await tick(core)
    reports: ReportService = context.bot_data["reports"]
    expired = await reports.expire_drafts()
    if result.messages or expired:
        sender: Sender = context.bot_data["sender"]
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
    stop: asyncio.Event | None = app.bot_data.pop("sender_stop", None)
    task: asyncio.Task[Any] | None = app.bot_data.pop("sender_task", None)
    if stop is not None:
        stop.set()
    if task is not None:
        await task


async def send_due(core: Core) -> SendStats:
    """Send what the outbox holds that is due now, once (for `koperasi-bot tick`)."""
    app = build_application(core)
    async with app:
        return await send_due_with(core, app.bot)


async def send_due_with(core: Core, bot: Bot) -> SendStats:
    return await Sender(core, TelegramTransport(bot)).drain()


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    log.error("Error while handling %r", update, exc_info=context.error)
    if (
        isinstance(update, Update)
        and update.effective_chat
        and update.effective_chat.type == "private"
    ):
        try:
            await reply(update, context, "error_generic")
        except Exception:  # the apology must never raise out of the error handler
            log.exception("Could not tell the user about the error")


def build_application(core: Core, request: BaseRequest | None = None) -> App:
    settings = core.settings
    token = (
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


class StartupError(Exception):
    """The bot could not start; `code` picks the sentence in the cli_startup_error template."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


def run_polling(core: Core) -> None:
    """Run on Telegram with long polling until interrupted."""
    app = build_application(core)
    try:
        app.run_polling(allowed_updates=Update.ALL_TYPES, drop_pending_updates=False)
    except InvalidToken as exc:
        raise StartupError("token", str(exc)) from None
    except NetworkError as exc:
        raise StartupError("network", str(exc)) from None


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
