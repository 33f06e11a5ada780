"""index users.name

Revision ID: 2e8b5f0c7a48
Revises: a4d96b2e1f37
Create Date: 2025-01-27 14:48:36.602745

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "2e8b5f0c7a48"
down_revision: str | Sequence[str] | None = "a4d96b2e1f37"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index("ix_users_name", "users", ["name"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_users_name", table_name="users")
