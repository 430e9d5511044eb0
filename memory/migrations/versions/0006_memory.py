"""the gated recurrent memory: embeddings.retained and .slot_id, memory_slots, memory_units, index_epochs

Every row made before this revision stays retained (the search indexes hold all of it, as before),
and its videos have no memory stage: `vidmem memory regate` gates a library afterwards.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("embeddings") as batch:
        batch.add_column(sa.Column("retained", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("slot_id", sa.Integer()))
        batch.create_index("ix_embeddings_slot_id", ["slot_id"])
    op.create_table(
        "memory_slots",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "library_id", sa.Integer(), sa.ForeignKey("libraries.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column(
            "exemplar_id", sa.Integer(), sa.ForeignKey("embeddings.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("video_id", sa.String(32), sa.ForeignKey("videos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("salience", sa.Float(), nullable=False),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("into_id", sa.Integer()),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_memory_slots_library_state", "memory_slots", ["library_id", "state"])
    op.create_index("ix_memory_slots_video_id", "memory_slots", ["video_id"])
    op.create_table(
        "memory_units",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "library_id", sa.Integer(), sa.ForeignKey("libraries.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("video_id", sa.String(32), sa.ForeignKey("videos.id", ondelete="CASCADE"), nullable=False),
        sa.Column("row_id", sa.Integer(), sa.ForeignKey("embeddings.id", ondelete="CASCADE"), nullable=False),
        sa.Column("segment_id", sa.Integer()),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("start", sa.Float(), nullable=False),
        sa.Column("end", sa.Float(), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("slot_id", sa.Integer()),
        sa.Column("similarity", sa.Float(), nullable=False),
        sa.Column("salience", sa.Float(), nullable=False),
    )
    op.create_index("ix_memory_units_slot", "memory_units", ["slot_id"])
    op.create_index("ix_memory_units_video_id", "memory_units", ["video_id"])
    op.create_table(
        "index_epochs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("library_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("index_epochs")
    op.drop_table("memory_units")
    op.drop_table("memory_slots")
    with op.batch_alter_table("embeddings") as batch:
        batch.drop_index("ix_embeddings_slot_id")
        batch.drop_column("slot_id")
        batch.drop_column("retained")
