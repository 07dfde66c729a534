"""The Telegram channel: thin handlers that read an Update, call the core and send its answer."""
