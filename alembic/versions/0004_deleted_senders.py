"""Messages outlive their sender's account: ``messages.sender_id`` is null once the account is deleted.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
FK = "fk_messages_sender_id_users"


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(FK, type_="foreignkey")
        batch.alter_column("sender_id", existing_type=ID, nullable=True)
        batch.create_foreign_key(FK, "users", ["sender_id"], ["id"], ondelete="SET NULL")


def downgrade() -> None:
    # Messages of deleted accounts have no sender to go back to.
    op.execute("DELETE FROM messages WHERE sender_id IS NULL")
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(FK, type_="foreignkey")
        batch.alter_column("sender_id", existing_type=ID, nullable=False)
        batch.create_foreign_key(FK, "users", ["sender_id"], ["id"], ondelete="CASCADE")
