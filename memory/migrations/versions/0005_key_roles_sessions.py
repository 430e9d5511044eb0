"""key roles and page sessions: api_keys.role and .source, and the sessions table

A library key made before this revision could upload and delete, so it becomes `write` (nothing it
did is refused afterwards); an admin key (no library) becomes `admin`. The key that the `api_key`
setting registered was named "configured": it is marked as such, so that changing the setting
revokes it.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("role", sa.String(8), nullable=False, server_default="write"))
        batch.add_column(sa.Column("source", sa.String(16)))
    keys = sa.table(
        "api_keys",
        sa.column("name", sa.String),
        sa.column("library_id", sa.Integer),
        sa.column("role", sa.String),
        sa.column("source", sa.String),
    )
    op.execute(keys.update().where(keys.c.library_id.is_(None)).values(role="admin"))
    op.execute(
        keys.update()
        .where(keys.c.name == "configured", keys.c.library_id.is_(None))
        .values(source="configured")
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("key_id", sa.Integer(), sa.ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_sessions_key_id", "sessions", ["key_id"])


def downgrade() -> None:
    op.drop_index("ix_sessions_key_id", "sessions")
    op.drop_table("sessions")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("source")
        batch.drop_column("role")
