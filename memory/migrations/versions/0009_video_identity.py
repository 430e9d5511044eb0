"""videos.identity: how a video's content hash was made

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # every video before this revision was a local file or an object known by its ETag; the old rows
    # cannot say which, so a remote one is marked by its URL
    with op.batch_alter_table("videos") as batch:
        batch.add_column(sa.Column("identity", sa.String(length=16), nullable=False, server_default="sha256"))
    op.execute("UPDATE videos SET identity = 'unknown' WHERE uri LIKE '%://%'")


def downgrade() -> None:
    with op.batch_alter_table("videos") as batch:
        batch.drop_column("identity")
