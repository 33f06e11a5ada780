"""A small, real Alembic project used as a fixture by Retort.

See ``README.md`` in this directory for the revision history, and ``revisions.py`` for
named constants pointing into it.
"""
