"""mark new orders pending

Data migration: every order whose status is 'new' becomes 'pending'.

Irreversible: downgrade() is deliberately a no-op. After the upgrade there is no way to
tell which 'pending' orders used to be 'new', so a downgrade leaves the data as it is
(the schema is unchanged by this revision, so downgrading through it still works).

Revision ID: b83f2d6a0e8c
Revises: 4a7e9c1b3d7b
Create Date: 2025-02-24 13:39:07.551093

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "b83f2d6a0e8c"
down_revision: str | Sequence[str] | None = "4a7e9c1b3d7b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.execute("UPDATE orders SET status = 'pending' WHERE status = 'new'")


def downgrade() -> None:
    """Downgrade schema."""
    pass
