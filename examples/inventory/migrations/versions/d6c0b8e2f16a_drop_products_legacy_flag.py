"""drop products.legacy_flag

Destructive: the column and its data are gone after upgrade. downgrade() re-adds the
column (nullable, empty) but cannot bring the old values back.

Revision ID: d6c0b8e2f16a
Revises: 9f1a3d7c4e59
Create Date: 2025-02-10 17:26:44.918530

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "d6c0b8e2f16a"
down_revision: str | Sequence[str] | None = "9f1a3d7c4e59"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.drop_column("products", "legacy_flag")


def downgrade() -> None:
    """Downgrade schema."""
    op.add_column("products", sa.Column("legacy_flag", sa.Boolean(), nullable=True))
