"""Ownership, soft delete and an audit trail (issue 12: sharing the app with a team).

- `records.owner`: who made the image (the signed-in email, lower case; without sign-in
  the local user "local"). Rows from before are the local user's.
- `records.deleted_at` / `records.deleted_by`: a delete hides the record; an admin can
  restore it for `RESTORE_DAYS` (core.history.store); then it is purged for good.
- `audit`: who did what to which record, when (delete, restore, purge, and regenerate,
  which the daily limit counts).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.add_column(sa.Column("owner", sa.Text, nullable=False, server_default="local"))
        batch.add_column(sa.Column("deleted_at", sa.Float(53)))
        batch.add_column(sa.Column("deleted_by", sa.Text))
    # "Mine" and the daily limit read one owner's records by time; purge reads old deletes.
    op.create_index("records_owner", "records", ["owner", "created_at"])
    op.create_index("records_deleted", "records", ["deleted_at"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float(53), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("record_id", sa.Text, nullable=False),
        sa.Column("owner", sa.Text),
        sa.Column("detail", sa.Text),
    )
    op.create_index("audit_at", "audit", ["at"])
    op.create_index("audit_actor", "audit", ["actor", "action", "at"])
