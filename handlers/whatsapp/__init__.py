"""The WhatsApp channel: the same handlers and core, spoken over the WhatsApp Cloud API.

`format` turns the core's HTML text and buttons into Cloud API message bodies; `bridge` is a
python-telegram-bot request class answering the Bot API calls of the handlers with Cloud API
calls; `webhook` receives WhatsApp's notifications and hands them to the handlers as Updates.
"""
