"""The core of the Koperasi Merah Putih bot: configuration, services and wiring."""
