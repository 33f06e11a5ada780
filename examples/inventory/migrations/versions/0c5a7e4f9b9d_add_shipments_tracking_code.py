"""add shipments.tracking_code

Revision ID: 0c5a7e4f9b9d
Revises: b83f2d6a0e8c
Create Date: 2025-03-03 10:58:26.009374

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0c5a7e4f9b9d"
down_revision: str | Sequence[str] | None = "b83f2d6a0e8c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column("shipments", sa.Column("tracking_code", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("shipments", "tracking_code")
