"""The first versioned schema: `records` (as before versioning) and `images` (bytes).

A history from before versioning already has `records` and its indexes; only what is
missing is created, so old SQLite folders keep working unchanged.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if not sa.inspect(bind).has_table("records"):
        op.create_table(
            "records",
            sa.Column("id", sa.Text, primary_key=True),
            sa.Column("created_at", sa.Float(53), nullable=False),
            sa.Column("session_id", sa.Text),
            sa.Column("prompt", sa.Text),
            sa.Column("negative_prompt", sa.Text),
            sa.Column("seed", sa.BigInteger),
            sa.Column("width", sa.Integer),
            sa.Column("height", sa.Integer),
            sa.Column("steps", sa.Integer),
            sa.Column("guidance_scale", sa.Float(53)),
            sa.Column("model", sa.Text),
            sa.Column("model_revision", sa.Text),
            sa.Column("scheduler", sa.Text),
            sa.Column("device", sa.Text),
            sa.Column("dtype", sa.Text),
            sa.Column("torch_version", sa.Text),
            sa.Column("diffusers_version", sa.Text),
            sa.Column("transformers_version", sa.Text),
            sa.Column("backend", sa.Text),
            sa.Column("duration_seconds", sa.Float(53)),
            sa.Column("image_sha256", sa.Text),
        )
    op.create_index("records_created_at", "records", ["created_at"], if_not_exists=True)
    op.create_index("records_seed", "records", ["seed", "created_at"], if_not_exists=True)
    op.create_index("records_session", "records", ["session_id", "created_at"], if_not_exists=True)
    op.create_table(
        "images",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("png", sa.LargeBinary, nullable=False),
        sa.Column("thumb", sa.LargeBinary),
    )
    if bind.dialect.name == "postgresql":
        # PNG and WebP are compressed already: storing them uncompressed saves the CPU of
        # a pointless second compression on every save.
        op.execute("ALTER TABLE images ALTER COLUMN png SET STORAGE EXTERNAL")
        op.execute("ALTER TABLE images ALTER COLUMN thumb SET STORAGE EXTERNAL")
