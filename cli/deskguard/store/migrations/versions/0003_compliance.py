"""Compliance runs: one row per run, one per host in it, one per host x control result.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "compliance_runs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("hosts", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_compliance_runs")),
    )
    op.create_index(op.f("ix_compliance_runs_finished_at"), "compliance_runs", ["finished_at"])
    op.create_table(
        "compliance_hosts",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("hostname", sa.String(253), nullable=False),
        sa.Column("device_uuid", sa.String(36), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("compliant", sa.Boolean(), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["run_id"], ["compliance_runs.id"], name=op.f("fk_compliance_hosts_run_id_compliance_runs")),
        sa.PrimaryKeyConstraint("run_id", "hostname", name=op.f("pk_compliance_hosts")),
    )
    op.create_table(
        "compliance_results",
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("hostname", sa.String(253), nullable=False),
        sa.Column("control", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("observed", sa.Text(), nullable=False),
        sa.Column("expected", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["compliance_runs.id"], name=op.f("fk_compliance_results_run_id_compliance_runs")),
        sa.PrimaryKeyConstraint("run_id", "hostname", "control", name=op.f("pk_compliance_results")),
    )


def downgrade() -> None:
    op.drop_table("compliance_results")
    op.drop_table("compliance_hosts")
    op.drop_index(op.f("ix_compliance_runs_finished_at"), table_name="compliance_runs")
    op.drop_table("compliance_runs")
