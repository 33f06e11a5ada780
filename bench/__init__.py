"""`make bench`: Retort's benchmarks (issue #2), written to bench/RESULTS.md.

Benchmarks measure; they are not timed tests. One run generates a 2,000-revision Alembic history
with branches and merges, creates its own throwaway PostgreSQL databases (the dashboard's and the
targets') on the server DATABASE_URL names, measures, writes bench/RESULTS.md and drops every
database it created.
"""
