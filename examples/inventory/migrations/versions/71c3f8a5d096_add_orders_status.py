"""add orders.status

Revision ID: 71c3f8a5d096
Revises: c5e2a9174f03
Create Date: 2025-01-16 11:07:58.418202

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "71c3f8a5d096"
down_revision: str | Sequence[str] | None = "c5e2a9174f03"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column(
        "orders",
        sa.Column("status", sa.String(length=20), nullable=False, server_default="new"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("orders", "status")
