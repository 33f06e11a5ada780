"""Reading a revision's source tells a reviewer what it destroys, what data it moves and whether it
can be undone, without ever running the file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from environments import source_html
from environments.core.findings import Finding, analyze, function_sources

VERSIONS = (
    Path(__file__).resolve().parent.parent / "examples" / "inventory" / "migrations" / "versions"
)

HEADER = '''\
"""a revision written for this test

Revision ID: 0123456789ab
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0123456789ab"
down_revision = None
'''
REVERSIBLE_DOWNGRADE = """
def downgrade() -> None:
    op.add_column("products", sa.Column("legacy_flag", sa.Boolean(), nullable=True))
"""


def revision(upgrade: str, downgrade: str = REVERSIBLE_DOWNGRADE, header: str = HEADER) -> str:
    return header + "\n\n" + textwrap.dedent(upgrade).strip("\n") + "\n\n" + downgrade


def line_of(source: str, fragment: str) -> int:
    """The 1-based line on which `fragment` first appears."""
    for number, text in enumerate(source.splitlines(), start=1):
        if fragment in text:
            return number
    raise AssertionError(f"{fragment!r} is not in the source")


def in_upgrade(source: str) -> list[Finding]:
    return [finding for finding in analyze(source) if finding.function == "upgrade"]


def only(source: str) -> Finding:
    found = in_upgrade(source)
    assert len(found) == 1, found
    return found[0]


# --- destructive schema operations ---------------------------------------------------------


def test_dropping_a_table_is_destructive() -> None:
    source = revision(
        """
        def upgrade() -> None:
            op.create_index("ix_users_name", "users", ["name"])
            op.drop_table("legacy_users")
        """
    )
    assert only(source) == Finding(
        "destructive",
        "drop_table",
        "upgrade",
        line_of(source, "drop_table"),
        "drops table legacy_users",
    )


def test_dropping_a_column_names_the_table_and_column() -> None:
    source = revision(
        """
        def upgrade() -> None:
            op.drop_column("products", "legacy_flag")
        """
    )
    finding = only(source)
    assert (finding.kind, finding.operation) == ("destructive", "drop_column")
    assert finding.detail == "drops column products.legacy_flag"
    assert finding.line == line_of(source, "drop_column")
    assert finding.severity == "danger"


def test_dropping_an_index_reads_op_f_names_and_the_table_keyword() -> None:
    source = revision(
        """
        def upgrade() -> None:
            op.drop_index(op.f("ix_users_email"), table_name="users")
        """
    )
    assert only(source).detail == "drops index ix_users_email on users"


def test_dropping_a_constraint_says_which_kind() -> None:
    source = revision(
        """
        def upgrade() -> None:
            op.drop_constraint("fk_orders_user_id", "orders", type_="foreignkey")
            op.drop_constraint("uq_users_email", table_name="users")
        """
    )
    assert [(f.operation, f.line, f.detail) for f in in_upgrade(source)] == [
        (
            "drop_constraint",
            line_of(source, "fk_orders"),
            "drops foreign key constraint fk_orders_user_id on orders",
        ),
        (
            "drop_constraint",
            line_of(source, "uq_users"),
            "drops constraint uq_users_email on users",
        ),
    ]


def test_a_type_change_is_destructive_with_the_new_type_and_the_old_one_when_given() -> None:
    source = revision(
        """
        def upgrade() -> None:
            op.alter_column("orders", "qty", type_=sa.BigInteger())
            op.alter_column(  # the note column
                "orders",
                "note",
                existing_type=sa.Text(),
                type_=sa.String(length=200),
            )
        """
    )
    assert [(f.operation, f.line, f.detail) for f in in_upgrade(source)] == [
        (
            "alter_column",
            line_of(source, '"qty"'),
            "changes the type of orders.qty to sa.BigInteger()",
        ),
        (
            "alter_column",
            line_of(source, "# the note column"),
            "changes the type of orders.note from sa.Text() to sa.String(length=200)",
        ),
    ]


def test_altering_nullability_or_a_default_is_not_destructive() -> None:
    source = revision(
        """
        def upgrade() -> None:
            op.alter_column("orders", "qty", nullable=False, existing_type=sa.Integer())
            op.alter_column("orders", "status", server_default="new", type_=None)
        """
    )
    assert in_upgrade(source) == []


def test_names_computed_at_run_time_are_said_to_be() -> None:
    source = revision(
        """
        TABLES = ["a", "b"]


        def upgrade() -> None:
            for name in TABLES:
                op.drop_table(name)
            column = "legacy_" + "flag"
            op.drop_column("products", column)
        """
    )
    assert [f.detail for f in in_upgrade(source)] == [
        "drops a table (name computed at run time)",
        "drops a column of products (name computed at run time)",
    ]


def test_a_name_assigned_once_to_a_literal_is_followed_and_a_schema_qualifies_the_table() -> None:
    source = revision(
        """
        LEGACY = "notes"


        def upgrade() -> None:
            op.drop_table(LEGACY, schema="audit")
        """
    )
    assert only(source).detail == "drops table audit.notes"


def test_operations_inside_if_for_with_and_try_blocks_are_found() -> None:
    source = revision(
        """
        def upgrade() -> None:
            if op.get_context().dialect.name == "postgresql":
                for name in ("a",):
                    try:
                        op.drop_table("pg_only")
                    except Exception:
                        op.drop_column("products", "fallback")
        """
    )
    assert [(f.kind, f.detail) for f in in_upgrade(source)] == [
        ("destructive", "drops table pg_only"),
        ("destructive", "drops column products.fallback"),
    ]


# --- batch operations ----------------------------------------------------------------------


def test_batch_operations_take_the_table_from_batch_alter_table_under_any_name() -> None:
    source = revision(
        """
        def upgrade() -> None:
            with op.batch_alter_table("products", schema=None) as products_batch:
                products_batch.add_column(sa.Column("sku", sa.String(32)))
                products_batch.drop_column("legacy_flag")
                products_batch.alter_column(
                    "price", existing_type=sa.Float(), type_=sa.Numeric(10, 2)
                )
                products_batch.drop_index("ix_products_name")
            with op.batch_alter_table(table_name="orders") as b:
                b.drop_constraint("fk_orders_product", type_="foreignkey")
        """
    )
    assert [(f.operation, f.line, f.detail) for f in in_upgrade(source)] == [
        ("drop_column", line_of(source, "legacy_flag"), "drops column products.legacy_flag"),
        (
            "alter_column",
            line_of(source, "products_batch.alter_column("),
            "changes the type of products.price from sa.Float() to sa.Numeric(10, 2)",
        ),
        ("drop_index", line_of(source, "ix_products"), "drops index ix_products_name on products"),
        (
            "drop_constraint",
            line_of(source, "fk_orders_product"),
            "drops foreign key constraint fk_orders_product on orders",
        ),
    ]


def test_a_batch_name_means_nothing_outside_its_with_block() -> None:
    source = revision(
        """
        def upgrade() -> None:
            with op.batch_alter_table("products") as batch_op:
                batch_op.add_column(sa.Column("sku", sa.String(32)))
            batch_op = {"legacy_flag": 1}
            batch_op.drop_column("legacy_flag")
        """
    )
    assert in_upgrade(source) == []


# --- SQL -----------------------------------------------------------------------------------


def test_a_delete_is_destructive_and_nothing_else() -> None:
    source = revision(
        """
        def upgrade() -> None:
            op.execute("DELETE FROM users WHERE email IS NULL")
        """
    )
    assert in_upgrade(source) == [
        Finding(
            "destructive",
            "execute",
            "upgrade",
            line_of(source, "DELETE"),
            "runs SQL that deletes rows: DELETE FROM users WHERE email IS NULL",
        )
    ]


def test_an_insert_is_a_data_migration_only() -> None:
    source = revision(
        """
        def upgrade() -> None:
            op.execute("INSERT INTO roles (name) VALUES ('admin')")
        """
    )
    finding = only(source)
    assert (finding.kind, finding.operation, finding.severity) == (
        "data_migration",
        "execute",
        "info",
    )
    assert finding.detail == "runs SQL: INSERT INTO roles (name) VALUES ('admin')"


def test_sql_wrapped_in_sa_text_or_text_is_read() -> None:
    source = revision(
        """
        from sqlalchemy import text


        def upgrade() -> None:
            op.execute(sa.text("TRUNCATE t"))
            op.execute(text("drop table if exists old_orders").execution_options(autocommit=True))
        """
    )
    assert [(f.kind, f.detail) for f in in_upgrade(source)] == [
        ("destructive", "runs SQL that empties tables: TRUNCATE t"),
        ("destructive", "runs SQL that drops a table: drop table if exists old_orders"),
    ]


def test_an_f_string_is_judged_by_its_constant_parts() -> None:
    source = revision(
        """
        def upgrade() -> None:
            table = "users"
            op.execute(f"UPDATE {table} SET active = true")
        """
    )
    assert only(source).detail == "runs SQL that updates rows: UPDATE {table} SET active = true"


def test_keywords_in_string_literals_and_referential_actions_are_not_statements() -> None:
    source = revision(
        """
        def upgrade() -> None:
            op.execute("INSERT INTO audit (action) VALUES ('delete'), ('drop table')")
            op.execute(
                "CREATE TABLE notes (id int, user_id int REFERENCES users ON DELETE CASCADE)"
            )
            op.execute("ALTER TABLE orders ALTER COLUMN qty DROP NOT NULL")
        """
    )
    assert [f.kind for f in in_upgrade(source)] == ["data_migration"] * 3


def test_several_statements_are_summed_up_and_long_sql_is_cut_short() -> None:
    source = revision(
        '''
        def upgrade() -> None:
            op.execute(
                """
                DELETE FROM sessions WHERE expires_at < now();
                UPDATE users SET last_seen = NULL WHERE last_seen < now() - interval '1 year';
                """
            )
        '''
    )
    assert only(source).detail == (
        "runs SQL that deletes rows and updates rows: DELETE FROM sessions WHERE "
        "expires_at < now(); UPDATE users SET last_seen = …"
    )


def test_a_sqlalchemy_delete_construct_is_destructive() -> None:
    source = revision(
        """
        accounts = sa.table("accounts", sa.column("id"))


        def upgrade() -> None:
            op.execute(accounts.delete().where(accounts.c.id > 10))
            op.execute(make_statement())
        """
    )
    assert [(f.kind, f.detail) for f in in_upgrade(source)] == [
        ("destructive", "runs SQL that deletes rows: accounts.delete().where(accounts.c.id > 10)"),
        ("data_migration", "runs SQL built at run time: make_statement()"),
    ]


def test_get_bind_and_the_connection_it_returns_are_data_migration() -> None:
    source = revision(
        """
        def upgrade() -> None:
            connection = op.get_bind()
            rows = connection.execute(sa.text("SELECT id FROM users")).fetchall()
            for row in rows:
                connection.execute(sa.text("UPDATE users SET n = 1 WHERE id = :id"), {"id": row.id})
            op.get_bind().exec_driver_sql("INSERT INTO log VALUES (1)")
        """
    )
    assert [(f.kind, f.operation, f.line, f.detail) for f in in_upgrade(source)] == [
        (
            "data_migration",
            "get_bind",
            line_of(source, "connection = op.get_bind()"),
            "uses the migration's database connection (op.get_bind()) to work with data directly",
        ),
        (
            "data_migration",
            "execute",
            line_of(source, "SELECT"),
            "runs SQL: SELECT id FROM users",
        ),
        (
            "destructive",
            "execute",
            line_of(source, "UPDATE"),
            "runs SQL that updates rows: UPDATE users SET n = 1 WHERE id = :id",
        ),
        (
            "data_migration",
            "execute",
            line_of(source, "exec_driver_sql"),
            "runs SQL: INSERT INTO log VALUES (1)",
        ),
    ]


def test_module_level_helpers_called_from_upgrade_are_followed_with_their_connection() -> None:
    source = revision(
        """
        def _backfill(conn) -> None:
            conn.execute(sa.text("DELETE FROM carts"))


        def _cleanup() -> None:
            op.drop_table("carts_old")


        def upgrade() -> None:
            _backfill(op.get_bind())
            _cleanup()
        """
    )
    assert [(f.function, f.line, f.detail) for f in analyze(source)][:2] == [
        (
            "upgrade",
            line_of(source, "DELETE FROM carts"),
            "runs SQL that deletes rows: DELETE FROM carts",
        ),
        ("upgrade", line_of(source, "carts_old"), "drops table carts_old"),
    ]


def test_bulk_insert_counts_the_rows_and_names_the_table() -> None:
    source = revision(
        """
        def upgrade() -> None:
            roles = sa.table("roles", sa.column("name", sa.String))
            op.bulk_insert(roles, [{"name": "admin"}, {"name": "viewer"}])
        """
    )
    assert only(source) == Finding(
        "data_migration",
        "bulk_insert",
        "upgrade",
        line_of(source, "bulk_insert"),
        "inserts 2 rows into roles",
    )


# --- downgrade -----------------------------------------------------------------------------

UPGRADE = """
def upgrade() -> None:
    op.add_column("products", sa.Column("sku", sa.String(32)))
"""


def irreversible(source: str) -> list[Finding]:
    return [f for f in analyze(source) if f.kind == "irreversible_downgrade"]


def test_a_downgrade_that_only_passes_cannot_undo_the_revision() -> None:
    source = revision(UPGRADE, "\ndef downgrade() -> None:\n    pass\n")
    assert irreversible(source) == [
        Finding(
            "irreversible_downgrade",
            "pass",
            "downgrade",
            line_of(source, "    pass"),
            "downgrade() does nothing (pass): this revision cannot be undone",
        )
    ]


def test_a_docstring_does_not_make_a_downgrade_do_something() -> None:
    source = revision(
        UPGRADE, '\ndef downgrade() -> None:\n    """Downgrade schema."""\n    pass\n'
    )
    assert [(f.operation, f.line) for f in irreversible(source)] == [
        ("pass", line_of(source, "    pass"))
    ]
    ellipsis = revision(UPGRADE, '\ndef downgrade() -> None:\n    """Nothing to do."""\n')
    assert [f.detail for f in irreversible(ellipsis)] == [
        "downgrade() does nothing (only a docstring): this revision cannot be undone"
    ]


def test_a_downgrade_that_raises_cannot_undo_the_revision() -> None:
    source = revision(
        UPGRADE,
        '\ndef downgrade() -> None:\n    raise NotImplementedError("one-way: data was merged")\n',
    )
    assert irreversible(source) == [
        Finding(
            "irreversible_downgrade",
            "raise",
            "downgrade",
            line_of(source, "raise NotImplementedError"),
            "downgrade() raises NotImplementedError: this revision cannot be undone",
        )
    ]


def test_a_downgrade_that_raises_only_under_a_condition_is_not_reported() -> None:
    source = revision(
        UPGRADE,
        "\ndef downgrade() -> None:\n"
        "    if op.get_context().as_sql:\n"
        "        raise RuntimeError('offline downgrade unsupported')\n"
        '    op.drop_column("products", "sku")\n',
    )
    assert irreversible(source) == []


def test_a_missing_downgrade_cannot_undo_the_revision() -> None:
    source = revision(UPGRADE, "")
    assert irreversible(source) == [
        Finding(
            "irreversible_downgrade",
            "missing",
            "downgrade",
            1,
            "the file has no downgrade() function: this revision cannot be undone",
        )
    ]


def test_an_empty_downgrade_of_an_empty_upgrade_like_a_merge_is_not_reported() -> None:
    source = revision("def upgrade() -> None:\n    pass\n", "\ndef downgrade() -> None:\n    ...\n")
    assert analyze(source) == []


def test_destructive_steps_of_a_downgrade_are_reported_as_the_downgrades() -> None:
    source = revision(
        """
        def upgrade() -> None:
            op.create_table("carts", sa.Column("id", sa.Integer(), primary_key=True))
            op.add_column("users", sa.Column("cart_id", sa.Integer(), nullable=True))
        """,
        '\ndef downgrade() -> None:\n    op.drop_column("users", "cart_id")\n'
        '    op.drop_table("carts")\n',
    )
    assert in_upgrade(source) == []
    assert [(f.function, f.detail) for f in analyze(source)] == [
        ("downgrade", "drops column users.cart_id"),
        ("downgrade", "drops table carts"),
    ]


def test_upgrade_findings_come_first_then_each_function_in_line_order() -> None:
    source = revision(
        "",
        '\ndef downgrade() -> None:\n    op.drop_table("carts")\n\n\n'
        "def upgrade() -> None:\n"
        '    op.drop_column("users", "b")\n'
        '    op.drop_column("users", "a")\n',
    )
    assert [(f.function, f.detail) for f in analyze(source)] == [
        ("upgrade", "drops column users.b"),
        ("upgrade", "drops column users.a"),
        ("downgrade", "drops table carts"),
    ]


# --- how op is imported --------------------------------------------------------------------


def test_op_imported_under_another_name_is_still_op() -> None:
    header = 'from alembic import op as alembic_op\n\nrevision = "0123456789ab"\n'
    source = revision(
        """
        def upgrade() -> None:
            alembic_op.drop_column("products", "legacy_flag")
            conn = alembic_op.get_bind()
        """,
        "\ndef downgrade() -> None:\n    alembic_op.drop_table('x')\n",
        header=header,
    )
    assert [(f.function, f.operation, f.detail) for f in analyze(source)] == [
        ("upgrade", "drop_column", "drops column products.legacy_flag"),
        (
            "upgrade",
            "get_bind",
            "uses the migration's database connection (alembic_op.get_bind()) "
            "to work with data directly",
        ),
        ("downgrade", "drop_table", "drops table x"),
    ]


def test_alembic_imported_as_a_package_is_followed_to_its_op() -> None:
    header = 'import alembic\n\nrevision = "0123456789ab"\n'
    source = revision(
        """
        def upgrade() -> None:
            alembic.op.drop_table("legacy")
        """,
        header=header,
    )
    assert only(source).detail == "drops table legacy"


# --- reading, not running ------------------------------------------------------------------


def test_a_syntax_error_is_a_value_error_naming_the_line() -> None:
    source = revision("def upgrade() -> None:\n    op.drop_table(\n")
    with pytest.raises(ValueError, match=r"^syntax error on line \d+: "):
        analyze(source)
    with pytest.raises(ValueError, match="syntax error on line 3"):
        analyze(b"def upgrade():\n    pass\n  oops\n")


def test_the_file_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    source = revision(
        f"""
        open({str(marker)!r}, "w").write("top level ran")


        def upgrade() -> None:
            open({str(marker)!r}, "w").write("upgrade ran")
            op.drop_table("users")
        """
    )
    assert only(source).detail == "drops table users"
    assert set(function_sources(source)) == {"upgrade", "downgrade"}
    assert not marker.exists()


def test_every_example_revision_is_read() -> None:
    by_revision = {
        path.name.split("_", 1)[0]: analyze(path.read_bytes())
        for path in sorted(VERSIONS.glob("*.py"))
    }
    assert len(by_revision) == 14

    drop_flag = by_revision["d6c0b8e2f16a"]
    assert (
        Finding("destructive", "drop_column", "upgrade", 26, "drops column products.legacy_flag")
        in drop_flag
    )

    # UPDATE rewrites existing values, so it is destructive rather than a plain data migration.
    pending = by_revision["b83f2d6a0e8c"]
    assert [(f.kind, f.operation, f.function) for f in pending] == [
        ("destructive", "execute", "upgrade"),
        ("irreversible_downgrade", "pass", "downgrade"),
    ]
    assert pending[0].detail == (
        "runs SQL that updates rows: UPDATE orders SET status = 'pending' WHERE status = 'new'"
    )

    create_users = by_revision["3f9c1a7e2b10"]
    assert [f for f in create_users if f.function == "upgrade"] == []
    assert [f.detail for f in create_users] == ["drops table users"]

    assert by_revision["a4d96b2e1f37"] == []  # the merge revision: nothing to do either way


# --- showing the source --------------------------------------------------------------------


def test_function_sources_are_the_exact_text_of_upgrade_and_downgrade() -> None:
    path = VERSIONS / "d6c0b8e2f16a_drop_products_legacy_flag.py"
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    sources = function_sources(path.read_bytes())

    assert list(sources) == ["upgrade", "downgrade"]
    upgrade = sources["upgrade"]
    assert (upgrade.name, upgrade.first_line, upgrade.last_line) == ("upgrade", 24, 26)
    assert upgrade.source == "".join(lines[23:26]).rstrip("\n")
    assert upgrade.source.startswith("def upgrade() -> None:")
    assert upgrade.source.endswith('op.drop_column("products", "legacy_flag")')
    downgrade = sources["downgrade"]
    assert downgrade.source == "".join(lines[28:31]).rstrip("\n")


def test_function_sources_leave_out_what_the_file_does_not_define() -> None:
    assert function_sources(revision(UPGRADE, "")).keys() == {"upgrade"}


def test_highlighted_code_is_escaped_html() -> None:
    html = source_html.highlight('def upgrade():\n    op.execute("<script>alert(1)</script>")\n')
    assert html.startswith('<div class="source"><pre>')
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert ".source" in source_html.highlight_css()
