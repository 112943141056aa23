"""Reservations: places of the daily limit held by requests still running (issue 21).

A request reserves its images' places before it generates (`HistoryStore.reserve`, in
one locked transaction with the count); saving an image converts one place into a
record, and a failed or stopped request releases what is left. A crashed process's
reservation ends at `expires_at`.

Self-contained (it creates one new table and touches nothing else), so it can be
renumbered when another migration lands first.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reservations",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("places", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float(53), nullable=False),
        sa.Column("expires_at", sa.Float(53), nullable=False),
    )
    op.create_index("reservations_owner", "reservations", ["owner", "expires_at"])
