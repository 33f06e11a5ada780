"""merge reporting into main

Revision ID: a4d96b2e1f37
Revises: 71c3f8a5d096, e07a4c6d2b85
Create Date: 2025-01-20 09:30:00.145987

"""

from collections.abc import Sequence

# revision identifiers, used by Alembic.
revision: str = "a4d96b2e1f37"
down_revision: str | Sequence[str] | None = ("71c3f8a5d096", "e07a4c6d2b85")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    pass


def downgrade() -> None:
    """Downgrade schema."""
    pass
