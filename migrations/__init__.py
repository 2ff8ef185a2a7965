"""Alembic migrations: one environment, a PostgreSQL schema per service."""
