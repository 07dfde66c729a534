"""What every Telegram handler shares: the core, the actor, and sending rendered templates."""

from __future__ import annotations

from typing import Any

from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Update, User
from telegram.ext import ContextTypes, filters

from bot.core import Core
from bot.identity import Actor, identify
from bot.replies import Reply
from bot.text import split_message

CHANNEL = "telegram"

# New messages in private chats; edits of old messages are not commands or answers.
PRIVATE = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE

Context = ContextTypes.DEFAULT_TYPE
Buttons = list[list[tuple[str, str]]]


def core_of(context: Context) -> Core:
    core = context.application.bot_data["core"]
    assert isinstance(core, Core)
    return core


def display_name(user: User | None) -> str:
    if user is None:
        return ""
    return " ".join(part for part in (user.first_name, user.last_name) if part).strip()


async def actor_of(update: Update, context: Context) -> Actor:
    user = update.effective_user
    assert user is not None
    async with core_of(context).db.sessions() as session:
        return await identify(session, CHANNEL, str(user.id))


def command_menu(core: Core, template: str = "commands") -> list[BotCommand]:
    """The command menu from a template: one "command description" per line."""
    lines = core.messages.render(template).splitlines()
    return [BotCommand(*line.split(" ", 1)) for line in lines if line.strip()]


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
        markup = keyboard(buttons) if index == len(parts) - 1 else None
        await context.bot.send_message(chat_id=chat.id, text=part, reply_markup=markup)


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
    await query.edit_message_text(text=split_message(text)[0], reply_markup=keyboard(buttons))


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
        markup = keyboard(
            [[(text, prefix + action) for text, action in row] for row in item.buttons]
        )
        if item.alert and query is not None:
            await query.answer(item.text, show_alert=True)
            answered = True
            continue
        if item.replace and query is not None and query.message is not None:
            await query.edit_message_text(split_message(item.text)[0], reply_markup=markup)
            continue
        parts = split_message(item.text)
        for index, part in enumerate(parts):
            await context.bot.send_message(
                chat.id, part, reply_markup=markup if index == len(parts) - 1 else None
            )
    if query is not None and not answered:
        await query.answer()
