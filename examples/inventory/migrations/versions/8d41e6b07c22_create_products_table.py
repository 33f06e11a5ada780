"""create products table

Revision ID: 8d41e6b07c22
Revises: 3f9c1a7e2b10
Create Date: 2025-01-08 15:02:47.093311

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "8d41e6b07c22"
down_revision: str | Sequence[str] | None = "3f9c1a7e2b10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "products",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("legacy_flag", sa.Boolean(), nullable=True),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("products")
