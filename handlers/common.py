"""What every Telegram handler shares: the core, the actor, and sending rendered templates."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from telegram import (
    Bot,
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError
from telegram.ext import ContextTypes, filters
from telegram.warnings import PTBDeprecationWarning

from bot.core import Core
from bot.identity import Actor, lookup
from bot.replies import Reply
from bot.text import split_message

CHANNEL = "telegram"

# New messages in private chats; edits of old messages are not commands or answers.
PRIVATE = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE

Context = ContextTypes.DEFAULT_TYPE
Buttons = list[list[tuple[str, str]]]
T = TypeVar("T")

log = logging.getLogger(__name__)

# A reply is worth a short wait: Telegram's 5xx, dropped connections and short 429s are
# retried in the handler (the outbox sender has its own, slower policy for what it sends).
# Only after the last attempt does the error reach the error handler. A timed-out request may
# have been delivered, so a reply is sent at least once, not exactly once.
REPLY_ATTEMPTS = 6
REPLY_FIRST_DELAY = 0.25
REPLY_MAX_RETRY_AFTER = 10.0


def retry_after_seconds(error: RetryAfter) -> float:
    """The wait Telegram asked for, whether PTB hands it back as int or timedelta.

    PTB 22 warns on reading `retry_after` unless PTB_TIMEDELTA is set; the value is the
    same either way, so the deprecation notice is not ours to act on.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value: object = error.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float):
        return float(value)
    raise TypeError(f"unexpected retry_after {value!r}")


async def call_api(call: Callable[[], Awaitable[T]]) -> T:
    """Run one Bot API call, retrying what is worth retrying: 429 (after its retry_after, when
    short), 5xx and network errors (with doubling delays). Refusals (400, 403) are raised at
    once."""
    delay = REPLY_FIRST_DELAY
    for attempt in range(1, REPLY_ATTEMPTS + 1):
        try:
            return await call()
        except RetryAfter as exc:
            wait = retry_after_seconds(exc)
            if attempt == REPLY_ATTEMPTS or wait > REPLY_MAX_RETRY_AFTER:
                raise
            log.info("Bot API asked to wait %.0f s (attempt %d)", wait, attempt)
            await asyncio.sleep(wait)
        except BadRequest:
            raise
        except NetworkError as exc:  # 5xx, timeouts, dropped connections
            if attempt == REPLY_ATTEMPTS:
                raise
            log.info("Bot API call failed (%s), retrying in %.2f s", exc, delay)
            await asyncio.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


async def _post(bot: Bot, endpoint: str, data: dict[str, Any]) -> None:
    """One Bot API call whose answer is not used. PTB's `send_message` and `edit_message_text`
    turn the answer (the message with its keyboard) back into a `Message`, which costs more CPU
    than the rest of the call (docs/BENCHMARKS.md, figure 1); `Bot._post` is the step before
    that: ExtBot's defaults and rate limiter, dropping None values, the request (HTTP, the
    in-process Bot API, the WhatsApp bridge) and PTB's errors, as with the public methods.
    (`do_api_request` would do the same but warns for every endpoint PTB has a method for.)
    Defaults are only inserted for values left at DEFAULT_NONE, so callers set parse_mode
    themselves, as the application's Defaults do (HTML)."""
    await bot._post(endpoint, data)


async def send_text(bot: Bot, chat_id: int | str, text: str, markup: Markup | None = None) -> None:
    """sendMessage in HTML, as `bot.send_message` with the application's Defaults, without
    parsing the sent message back."""
    await _post(
        bot,
        "sendMessage",
        {"chat_id": chat_id, "text": text, "parse_mode": ParseMode.HTML, "reply_markup": markup},
    )


async def chat_action(context: Context, chat_id: int, action: str) -> None:
    """Show "sending a photo…" and the like: a hint, so a failure is only logged."""
    try:
        await context.bot.send_chat_action(chat_id, action)
    except TelegramError as exc:
        log.info("chat action not shown: %s", exc)


async def answer_query(update: Update, text: str | None = None, *, alert: bool = False) -> None:
    """Stop a pressed button's spinner. If Telegram will not take it even after retries, the
    spinner stops on its own after a while: not worth failing the update for."""
    query = update.callback_query
    if query is None:
        return
    try:
        await call_api(partial(query.answer, text, show_alert=alert))
    except TelegramError as exc:
        log.warning("could not answer a button press: %s", exc)


def core_of(context: Context) -> Core:
    core = context.application.bot_data["core"]
    assert isinstance(core, Core)
    return core


def channel_of(context: Context) -> str:
    """The channel of the Application handling the update: "telegram", or "whatsapp" for the
    WhatsApp channel's Application (bot_data["channel"])."""
    return str(context.application.bot_data.get("channel", CHANNEL))


def display_name(user: User | None) -> str:
    if user is None:
        return ""
    return " ".join(part for part in (user.first_name, user.last_name) if part).strip()


# Slow officer commands ---------------------------------------------------------------------------

# Where the tasks of `in_background` are kept, with the update each answers.
_BACKGROUND = "koperasi_background"


Handler = Callable[[Update, Context], Coroutine[Any, Any, None]]


def in_background(update: Update, context: Context, handler: Handler) -> None:
    """Answers `update` with `handler` in a task of its own. Updates are handled one at a time
    (in the order each person sent them): an officer's export of a whole country (seconds) would
    otherwise hold up everyone's report answers behind it. For read-only commands only; their
    heavy part takes `Core.slow_work`, one at a time. PTB hands the task's errors to the error
    handler with the update, and `Application.stop` waits for it. A webhook's update is
    answered 200 once the task started: a process killed meanwhile loses that answer (nothing
    was written; the officer asks again)."""
    app = context.application
    running: dict[asyncio.Task[Any], Update] = app.bot_data.setdefault(_BACKGROUND, {})
    task = app.create_task(handler(update, context), update=update, name="background")
    running[task] = update
    task.add_done_callback(lambda done: running.pop(done, None))


async def settle(app: Any, update: Update | None = None) -> None:
    """Waits for the background work of `update` (of every update when None) to end: the local
    chat, the simulator and WhatsApp's bridge show a command's answer only once it is whole."""
    running: dict[asyncio.Task[Any], Update] = app.bot_data.get(_BACKGROUND, {})
    while True:
        tasks = [t for t, u in running.items() if not t.done() and (update is None or u is update)]
        if not tasks:
            return
        await asyncio.wait(tasks)


def slow(handler: Handler) -> Handler:
    """`handler`, run by `in_background`."""

    async def start(update: Update, context: Context) -> None:
        if context.application.running:
            in_background(update, context, handler)
        else:  # driven update by update (the tests' process_update): nothing else to hold up
            await handler(update, context)

    start.__name__ = start.__qualname__ = f"slow_{handler.__name__}"
    return start


# Where actor_of keeps the actor of the update being handled (PTB makes one context per update).
_ACTOR = "koperasi_actor"


async def actor_of(update: Update, context: Context) -> Actor:
    """Who sent the update, as the database says when the update arrived: looked up once per
    update (the text router asks several features in turn, each wanting the actor)."""
    seen, known = context.__dict__.get(_ACTOR, (None, None))
    if seen is update and isinstance(known, Actor):
        return known
    user = update.effective_user
    assert user is not None
    core = core_of(context)
    actor = await lookup(core.db, channel_of(context), str(user.id), now=core.clock.now())
    context.__dict__[_ACTOR] = (update, actor)
    return actor


def command_menu(core: Core, template: str = "commands") -> list[BotCommand]:
    """The command menu from a template: one "command description" per line."""
    lines = core.messages.render(template).splitlines()
    return [BotCommand(*line.split(" ", 1)) for line in lines if line.strip()]


# An inline keyboard as the Bot API takes it (see markup_of).
Markup = dict[str, Any]


def markup_of(buttons: Buttons | None) -> Markup | None:
    """The inline keyboard as JSON-ready data, what PTB would send for an InlineKeyboardMarkup
    of these buttons: the replies of every update carry one, and building PTB's button objects
    cost more than sending them."""
    if not buttons:
        return None
    return {
        "inline_keyboard": [
            [{"text": text, "callback_data": data} for text, data in row] for row in buttons
        ]
    }


def keyboard(buttons: Buttons | None) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(text, callback_data=data) for text, data in row] for row in buttons]
    )


def label(context: Context, name: str, **values: Any) -> str:
    return core_of(context).messages.render(name, **values)


async def reply(
    update: Update,
    context: Context,
    template: str,
    *,
    buttons: Buttons | None = None,
    **values: Any,
) -> None:
    """Render a template and send it to the update's chat, split below Telegram's limit; the
    buttons go with the last part."""
    chat = update.effective_chat
    assert chat is not None
    text = core_of(context).messages.render(template, **values)
    parts = split_message(text)
    for index, part in enumerate(parts):
        markup = markup_of(buttons) if index == len(parts) - 1 else None
        await call_api(partial(send_text, context.bot, chat.id, part, markup))


async def edit(
    update: Update,
    context: Context,
    template: str,
    *,
    buttons: Buttons | None = None,
    **values: Any,
) -> None:
    """Replace the text of the message whose button was pressed (and drop its buttons)."""
    query = update.callback_query
    assert query is not None
    text = core_of(context).messages.render(template, **values)
    await edit_text(query, split_message(text)[0], markup_of(buttons))


async def edit_text(query: Any, text: str, markup: Markup | None) -> None:
    """Edit the pressed message; an edit that changes nothing (a press delivered twice, or a
    retried edit that had gone through) is no error."""
    message = query.message
    if query.inline_message_id or not isinstance(message, Message):
        # PTB's own way: an inline message, or an inaccessible one (PTB raises TypeError).
        call = partial(
            query.edit_message_text,
            text,
            reply_markup=InlineKeyboardMarkup.de_json(markup, query.get_bot()) if markup else None,
        )
    else:
        call = partial(
            _post,
            query.get_bot(),
            "editMessageText",
            {
                "chat_id": message.chat_id,
                "message_id": message.message_id,
                "business_connection_id": message.business_connection_id,
                "text": text,
                "parse_mode": ParseMode.HTML,
                "reply_markup": markup,
            },
        )
    try:
        await call_api(call)
    except BadRequest as exc:
        if "not modified" not in str(exc).lower():
            raise


async def show_replies(
    update: Update, context: Context, replies: list[Reply], prefix: str = ""
) -> None:
    """Send the core's replies: edits in place for pressed buttons, pop-ups for alerts. Button
    actions get the feature's callback `prefix`."""
    chat = update.effective_chat
    assert chat is not None
    query = update.callback_query
    answered = False
    for item in replies:
        markup = markup_of(
            [[(text, prefix + action) for text, action in row] for row in item.buttons]
        )
        if item.alert and query is not None:
            await answer_query(update, item.text, alert=True)
            answered = True
            continue
        if item.replace and query is not None and query.message is not None:
            await edit_text(query, split_message(item.text)[0], markup)
            continue
        parts = split_message(item.text)
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            await call_api(partial(send_text, context.bot, chat.id, part, markup if last else None))
    if query is not None and not answered:
        await answer_query(update)
