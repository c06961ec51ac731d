"""scheduling of work: queued tasks with reasons, tries and warnings, stream leases, throttles,
the run log, the snapshot marker key, the dispatch lock, mover capacity, job selections, and
the vCenter in the snapshot ledger's key (morefs repeat across vCenters)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("service_instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("seen_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("capacity", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("selection", JSONType, nullable=False, server_default="{}"))
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wait_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wait_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("tries", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("warnings", JSONType, nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("host", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("datastores", JSONType, nullable=False, server_default="[]"))
    with op.batch_alter_table("snapshot_ledger", schema=None) as batch_op:
        batch_op.drop_constraint("pk_snapshot_ledger", type_="primary")
        batch_op.create_primary_key("pk_snapshot_ledger", ["snapshot_name", "vm_moref", "vcenter"])
    op.create_table(
        "leases",
        sa.Column("resource", sa.String(length=512), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("resource", "slot", name=op.f("pk_leases")),
    )
    op.create_index(op.f("ix_leases_expires_at"), "leases", ["expires_at"])
    op.create_table(
        "throttles",
        sa.Column("resource", sa.String(length=512), nullable=False),
        sa.Column("limit_now", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("resource", name=op.f("pk_throttles")),
    )
    op.create_table(
        "run_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("task_id", sa.String(length=160), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_log")),
    )
    op.create_index(op.f("ix_run_log_run_id"), "run_log", ["run_id"])
    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_meta")),
    )
    op.create_table(
        "dispatch_lock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispatch_lock")),
    )


def downgrade() -> None:
    op.drop_table("dispatch_lock")
    op.drop_table("meta")
    op.drop_index(op.f("ix_run_log_run_id"), table_name="run_log")
    op.drop_table("run_log")
    op.drop_table("throttles")
    op.drop_index(op.f("ix_leases_expires_at"), table_name="leases")
    op.drop_table("leases")
    with op.batch_alter_table("snapshot_ledger", schema=None) as batch_op:
        batch_op.drop_constraint("pk_snapshot_ledger", type_="primary")
        batch_op.create_primary_key("pk_snapshot_ledger", ["snapshot_name", "vm_moref"])
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        for column in ("datastores", "host", "warnings", "tries", "not_before", "wait_reason"):
            batch_op.drop_column(column)
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("wait_reason")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("selection")
    with op.batch_alter_table("service_instances", schema=None) as batch_op:
        batch_op.drop_column("capacity")
        batch_op.drop_column("seen_at")
