"""create report_runs table

Starts the "reporting" branch, which forks off at the products revision and is merged
back into the main line later.

Revision ID: 5b7d0e3a91c4
Revises: 8d41e6b07c22
Create Date: 2025-01-14 08:55:39.260418

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "5b7d0e3a91c4"
down_revision: str | Sequence[str] | None = "8d41e6b07c22"
branch_labels: str | Sequence[str] | None = ("reporting",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "report_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(),
            nullable=False,
            server_default=sa.func.current_timestamp(),
        ),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("report_runs")
