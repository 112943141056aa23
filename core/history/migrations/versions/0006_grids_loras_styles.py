"""X/Y grids, LoRAs and styles (issue 19).

- `records.loras`: the LoRAs an image was made with, as applied (JSON list of {"name",
  "weight", "sha256"}); `records.styles`: the styles merged into its prompt (JSON list of
  {"name", "prompt", "negative_prompt"}); rows from before have none (`[]`);
- `records.grid_id` / `records.grid_cell`: the X/Y grid an image is a cell of ("" when
  none) and its index there;
- `grids`: one row per grid (owner, axes and cells as JSON, how it ended);
- `styles`: named prompt styles per person, `shared` when an admin published one.

Self-contained (new columns with defaults and new tables): it follows issue 18's 0005.

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
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("loras", sa.Text, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("styles", sa.Text, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("grid_id", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("grid_cell", sa.Integer, nullable=False, server_default="0"))
    op.create_index("records_grid", "records", ["grid_id", "grid_cell"])
    op.create_table(
        "grids",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float(53), nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("columns", sa.Integer, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
    )
    op.create_index("grids_owner", "grids", ["owner", "created_at"])
    op.create_table(
        "styles",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False, server_default=""),
        sa.Column("negative_prompt", sa.Text, nullable=False, server_default=""),
        sa.Column("shared", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Float(53), nullable=False),
        sa.Column("updated_at", sa.Float(53), nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("owner", "name", name="styles_owner_name"),
    )
    op.create_index("styles_shared", "styles", ["shared"])
