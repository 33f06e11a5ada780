"""create audit_notes table

Revision ID: f2b6d1a8c3ae
Revises: 0c5a7e4f9b9d
Create Date: 2025-03-10 15:44:12.687230

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "f2b6d1a8c3ae"
down_revision: str | Sequence[str] | None = "0c5a7e4f9b9d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "audit_notes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("table_name", sa.String(length=100), nullable=False),
        sa.Column("row_id", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(),
            nullable=False,
            server_default=sa.func.current_timestamp(),
        ),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("audit_notes")
