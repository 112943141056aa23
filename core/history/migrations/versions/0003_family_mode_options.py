"""Model family, generation mode and the mode's options (issue 17: families and modes).

- `records.family`: the model family whose rules made the image (`core.models` id);
- `records.mode`: the generation mode (`core.modes` id), text to image for every row so far;
- `records.mode_options`: that mode's options as a JSON object, so the next mode
  (image-to-image, inpainting) needs no new column.

Rows from before are text to image without options; their family follows their model:
the demo family for the demo, SD3.5 Large / Large Turbo for those Hub ids, else SD3.5
Medium (the only family the app knew). The ids are spelled out here, not imported: a
migration keeps meaning what it meant when it was written.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# model (SD_MODEL as recorded) → family id, for rows written before this migration.
FAMILY_BY_MODEL = {
    "demo": "demo",
    "stabilityai/stable-diffusion-3.5-large": "sd35-large",
    "stabilityai/stable-diffusion-3.5-large-turbo": "sd35-large-turbo",
}


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("family", sa.Text, nullable=False, server_default="sd35-medium"))
        batch.add_column(sa.Column("mode", sa.Text, nullable=False, server_default="txt2img"))
        batch.add_column(sa.Column("mode_options", sa.Text, nullable=False, server_default="{}"))
    records = sa.table("records", sa.column("model", sa.Text), sa.column("family", sa.Text))
    for model, family in FAMILY_BY_MODEL.items():
        op.execute(records.update().where(records.c.model == model).values(family=family))
