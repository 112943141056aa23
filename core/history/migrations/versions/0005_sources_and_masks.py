"""Sources and masks of the modes that work on an image (issue 18: Vary, Inpaint, Upscale).

- `records.source_record`: the record whose image was the source (Vary / Inpaint /
  Upscale of a result): a reference, no second copy of its bytes;
- `records.source_sha256`: else the SHA-256 of the source's own PNG bytes (an upload,
  fitted to the family's sizes), kept once per SHA-256;
- `records.mask_sha256`: the SHA-256 of the inpaint mask's PNG bytes, kept the same way;
- `inputs`: those bytes, for the engines that keep bytes in the database (PostgreSQL);
  a local SQLite history keeps them as files in `inputs/` beside `images/`.

Rows from before are text to image: all three columns NULL. Self-contained (new nullable
columns and one new table), so it can be renumbered when another migration lands first.

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
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("source_record", sa.Text))
        batch.add_column(sa.Column("source_sha256", sa.Text))
        batch.add_column(sa.Column("mask_sha256", sa.Text))
    op.create_table(
        "inputs",
        sa.Column("sha256", sa.Text, primary_key=True),
        sa.Column("png", sa.LargeBinary, nullable=False),
    )
