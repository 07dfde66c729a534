"""Persistence: SQLAlchemy models, engine and session setup, queries and migrations."""
