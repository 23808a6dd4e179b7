"""Initial schema: devices, secrets, audit (append-only, hash-chained).

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SQLITE_APPEND_ONLY = [
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END",
]
_PG_APPEND_ONLY = [
    "CREATE FUNCTION deskguard_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'audit is append-only'; END $$",
    "CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit "
    "FOR EACH ROW EXECUTE FUNCTION deskguard_audit_append_only()",
]


def upgrade() -> None:
    op.create_table(
        "devices",
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("hostname", sa.String(253), nullable=False),
        sa.Column("os", sa.String(32), nullable=False),
        sa.Column("os_version", sa.String(64), nullable=True),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("ssh_user", sa.String(64), nullable=False),
        sa.Column("operator", sa.String(128), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_devices")),
    )
    op.create_index("uq_devices_hostname_live", "devices", ["hostname"], unique=True,
                    sqlite_where=sa.text("state <> 'removed'"), postgresql_where=sa.text("state <> 'removed'"))
    op.create_table(
        "secrets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_uuid", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(128), nullable=False),
        sa.Column("escrow_key_id", sa.String(64), nullable=True),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["device_uuid"], ["devices.uuid"], name=op.f("fk_secrets_device_uuid_devices")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secrets")),
    )
    op.create_index(op.f("ix_secrets_device_uuid"), "secrets", ["device_uuid"])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
        sa.UniqueConstraint("hash", name=op.f("uq_audit_hash")),
    )
    op.create_index(op.f("ix_audit_target"), "audit", ["target"])
    dialect = op.get_bind().dialect.name
    for stmt in {"sqlite": _SQLITE_APPEND_ONLY, "postgresql": _PG_APPEND_ONLY}.get(dialect, []):
        op.execute(stmt)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_no_delete")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_no_change ON audit")
        op.execute("DROP FUNCTION IF EXISTS deskguard_audit_append_only()")
    op.drop_index(op.f("ix_audit_target"), table_name="audit")
    op.drop_table("audit")
    op.drop_index(op.f("ix_secrets_device_uuid"), table_name="secrets")
    op.drop_table("secrets")
    op.drop_index("uq_devices_hostname_live", table_name="devices")
    op.drop_table("devices")
