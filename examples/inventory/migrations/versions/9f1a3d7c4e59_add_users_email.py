"""add users.email

Revision ID: 9f1a3d7c4e59
Revises: 2e8b5f0c7a48
Create Date: 2025-02-03 10:12:19.330861

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "9f1a3d7c4e59"
down_revision: str | Sequence[str] | None = "2e8b5f0c7a48"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column("users", sa.Column("email", sa.String(length=255), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column("users", "email")
