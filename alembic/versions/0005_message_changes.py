"""Messages that change: replies, edits, deletes and reactions, each change numbered by the chat's ``rev``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.add_column(sa.Column("last_rev", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("rev", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("reply_to", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("edited_at", DateTimeUTC(timezone=True), nullable=True))
        batch.add_column(sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Until now the only change was a new message: its rev is its seq.
    op.execute("UPDATE messages SET rev = seq")
    op.execute("UPDATE chats SET last_rev = last_seq")
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("rev", existing_type=sa.BigInteger(), server_default=None)
        batch.create_unique_constraint("uq_messages_chat_rev", ["chat_id", "rev"])
    op.create_table(
        "message_reactions",
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("emoji", sa.String(length=32), nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("rev", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["chat_id", "seq"],
            ["messages.chat_id", "messages.seq"],
            name="fk_message_reactions_message",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_message_reactions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("chat_id", "seq", "emoji", "user_id", name="pk_message_reactions"),
    )
    op.create_index("ix_message_reactions_user_id", "message_reactions", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_message_reactions_user_id", table_name="message_reactions")
    op.drop_table("message_reactions")
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("uq_messages_chat_rev", type_="unique")
        batch.drop_column("deleted")
        batch.drop_column("edited_at")
        batch.drop_column("reply_to")
        batch.drop_column("rev")
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("last_rev")
