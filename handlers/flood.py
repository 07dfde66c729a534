"""Flood control in Telegram: runs before every feature (group -1) and stops the updates of a
person who sends too fast, after telling them once."""

from __future__ import annotations

import math

from telegram import Update
from telegram.ext import ApplicationHandlerStop, BaseHandler, TypeHandler

from bot.flood import FloodGate, Verdict
from handlers.common import Context, answer_query, reply

# Where register_handlers keeps the gate; absent means no flood control.
BOT_DATA_KEY = "flood"


def gate_of(context: Context) -> FloodGate | None:
    found = context.bot_data.get(BOT_DATA_KEY)
    return found if isinstance(found, FloodGate) else None


async def check(update: Update, context: Context) -> None:
    gate = gate_of(context)
    user = update.effective_user
    if gate is None or user is None:
        return
    verdict = gate.check(user.id)
    if verdict is Verdict.ALLOW:
        return
    if verdict is Verdict.WARN:
        chat = update.effective_chat
        if chat is not None and chat.type == chat.PRIVATE:
            await reply(update, context, "flood_pelan", detik=math.ceil(gate.window_seconds))
        await answer_query(update)
    raise ApplicationHandlerStop


def build_handlers() -> list[BaseHandler[Update, Context, None]]:
    return [TypeHandler(Update, check)]
