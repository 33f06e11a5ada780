"""create order_reports table

Part of the "reporting" branch. order_reports has a foreign key to orders, which is
created on the main line, so this revision declares a cross-branch dependency on the
orders revision (c5e2a9174f03) through ``depends_on``.

Revision ID: e07a4c6d2b85
Revises: 5b7d0e3a91c4
Create Date: 2025-01-15 16:20:11.734052

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "e07a4c6d2b85"
down_revision: str | Sequence[str] | None = "5b7d0e3a91c4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = "c5e2a9174f03"


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "order_reports",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("report_run_id", sa.Integer(), sa.ForeignKey("report_runs.id"), nullable=False),
        sa.Column("order_id", sa.Integer(), sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("order_reports")
