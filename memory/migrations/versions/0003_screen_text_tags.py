"""screen_texts and tags: what the vision stage read and recognised in each shot

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _owned() -> list[sa.Column]:
    return [
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("video_id", sa.String(32), sa.ForeignKey("videos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("segment_id", sa.Integer(), sa.ForeignKey("segments.id", ondelete="CASCADE")),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "screen_texts",
        *_owned(),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("box", sa.JSON()),
        sa.Column("score", sa.Float(), nullable=False),
    )
    op.create_index("ix_screen_texts_video_start", "screen_texts", ["video_id", "start"])
    op.create_table(
        "tags",
        *_owned(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
    )
    op.create_index("ix_tags_video_kind_name", "tags", ["video_id", "kind", "name"])


def downgrade() -> None:
    op.drop_index("ix_tags_video_kind_name", "tags")
    op.drop_table("tags")
    op.drop_index("ix_screen_texts_video_start", "screen_texts")
    op.drop_table("screen_texts")
