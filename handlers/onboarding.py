"""Onboarding in chat: /start with an invite code, /bantuan, /keluar."""

from __future__ import annotations

from telegram import BotCommandScopeChat, Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler

from bot import onboarding
from bot.identity import Actor
from handlers.common import (
    PRIVATE,
    Context,
    actor_of,
    answer_query,
    channel_of,
    command_menu,
    core_of,
    display_name,
    edit,
    label,
    reply,
)


async def greet(update: Update, context: Context, actor: Actor, template: str) -> None:
    now = core_of(context).clock.now()
    if actor.membership is not None:
        m = actor.membership
        await reply(
            update,
            context,
            template,
            now=now,
            nama=actor.nama,
            jabatan=m.jabatan,
            koperasi=m.koperasi_nama,
            kelurahan=m.kelurahan,
            kecamatan=m.kecamatan,
        )
    if actor.officer is not None:
        await reply(
            update,
            context,
            "start_officer",
            now=now,
            nama=actor.nama,
            kecamatan=actor.officer.kecamatan,
            can_broadcast=actor.officer.can_broadcast,
        )
        # Officers get their own command menu in their chat (board members keep the default).
        chat = update.effective_chat
        assert chat is not None
        await context.bot.set_my_commands(
            command_menu(core_of(context), "commands_officer"),
            scope=BotCommandScopeChat(chat.id),
        )


async def link_with_code(update: Update, context: Context, code: str) -> None:
    user = update.effective_user
    assert user is not None
    result = await onboarding.redeem_invite(
        core_of(context),
        channel=channel_of(context),
        external_id=str(user.id),
        display_name=display_name(user),
        code=code,
        username=user.username,
    )
    if result.status is onboarding.RedeemStatus.LINKED:
        await greet(update, context, result.actor, "start_linked")
        return
    membership = result.actor.membership
    await reply(
        update,
        context,
        "invite_failed",
        status=result.status.value,
        koperasi=membership.koperasi_nama if membership else "",
    )


async def start(update: Update, context: Context) -> None:
    if context.args:
        await link_with_code(update, context, "".join(context.args))
        return
    actor = await actor_of(update, context)
    if actor.is_linked:
        await greet(update, context, actor, "start_board")
    else:
        await reply(update, context, "start_unlinked", now=core_of(context).clock.now())


async def bantuan(update: Update, context: Context) -> None:
    actor = await actor_of(update, context)
    await reply(update, context, "bantuan", board=actor.membership, officer=actor.officer)


async def keluar(update: Update, context: Context) -> None:
    actor = await actor_of(update, context)
    if actor.membership is None:
        await reply(update, context, "keluar_not_linked", officer=actor.officer)
        return
    await reply(
        update,
        context,
        "keluar_confirm",
        koperasi=actor.membership.koperasi_nama,
        jabatan=actor.membership.jabatan,
        buttons=[
            [
                (label(context, "btn_keluar_ya"), "keluar:ya"),
                (label(context, "btn_batal"), "keluar:batal"),
            ]
        ],
    )


async def keluar_answer(update: Update, context: Context) -> None:
    query = update.callback_query
    assert query is not None
    await answer_query(update)
    if query.data == "keluar:batal":
        await edit(update, context, "keluar_cancelled")
        return
    # The button only names the action; whether there is a link to cut is decided now.
    actor = await actor_of(update, context)
    if actor.membership is None or not await onboarding.unlink(core_of(context), actor):
        await edit(update, context, "keluar_not_linked", officer=actor.officer)
        return
    await edit(update, context, "keluar_done", koperasi=actor.membership.koperasi_nama)


async def whatsapp(update: Update, context: Context) -> None:
    """/whatsapp: a linked board member gets a code (and a wa.me link with it typed in) that
    joins their WhatsApp chat to this same account."""
    core = core_of(context)
    actor = await actor_of(update, context)
    number = core.settings.whatsapp_business_number
    if actor.channel != "telegram" or not core.settings.whatsapp_enabled or not number:
        await reply(update, context, "wa_tautan", status="off")
        return
    if actor.membership is None:
        await reply(update, context, "wa_tautan", status="not_linked")
        return
    invite = await onboarding.create_channel_invite(
        core,
        channel=actor.channel,
        external_id=actor.external_id,
        created_by=f"{actor.channel}:{actor.external_id}",
    )
    await reply(
        update,
        context,
        "wa_tautan",
        status="ok",
        code=invite.code,
        link=f"https://wa.me/{number}?text=DAFTAR%20{invite.code}",
        sampai=invite.expires_at,
    )


def build_handlers() -> list[BaseHandler[Update, Context, None]]:
    return [
        CommandHandler("whatsapp", whatsapp, filters=PRIVATE),
        CommandHandler("start", start, filters=PRIVATE),
        CommandHandler(["bantuan", "help"], bantuan, filters=PRIVATE),
        CommandHandler("keluar", keluar, filters=PRIVATE),
        CallbackQueryHandler(keluar_answer, pattern=r"^keluar:(ya|batal)$"),
    ]
