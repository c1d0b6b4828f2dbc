"""Message search: a full-text index over the text of live messages.

PostgreSQL: a GIN index on ``to_tsvector('simple', text)`` (``simple``: no stemming or stop words, so
every language is searched alike). The search statement repeats the expression, so it is answered from
the index; an edit or a delete (which empties the text) changes the entry with the row.

SQLite: an FTS5 table over ``messages`` (external content: the text is not stored twice) kept in step
by triggers on insert, delete and on an update of ``text`` or ``deleted``. A deleted message is indexed
as the empty text. Caution: a later ``batch_alter_table("messages")`` on SQLite rebuilds the table,
which drops these triggers: such a migration must create ``SQLITE_TRIGGERS`` again afterwards (and, if
rows changed meanwhile, refill the index: ``INSERT INTO messages_fts(messages_fts) VALUES ('delete-all')``,
then ``SQLITE_FILL``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Not partial (``WHERE NOT deleted``): PostgreSQL keeps statistics of the expression only for a full
# index, and without them it cannot tell a rare word from a common one when it plans a search. A deleted
# message's text is empty, so it has no entry anyway. A send adds its words to a pending list that
# every search reads through, until the list reaches ``gin_pending_list_limit`` and the send that fills
# it merges it into the index. 256 kB (against 4 MB by default) keeps that read short; the merge is
# still several times cheaper per message than writing each one's words into the index at once
# (``fastupdate = off``: about 240 against 60 us per message, measured on 300,000 messages).
PG_INDEX = (
    "CREATE INDEX ix_messages_text_search ON messages "
    "USING gin (to_tsvector('simple'::regconfig, text)) WITH (gin_pending_list_limit = 256)"
)

# What the FTS table holds for a row is ``CASE WHEN deleted THEN '' ELSE text END``: its text, or
# nothing once it is deleted. The 'delete' command of an external-content table must be given exactly
# what was indexed, so every trigger writes that same expression.
# unicode61 folds case and splits on anything that is not a letter or digit, in every script;
# diacritics are kept, as PostgreSQL's ``simple`` keeps them.
SQLITE_TABLE = (
    "CREATE VIRTUAL TABLE messages_fts USING fts5("
    "text, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 0')"
)
SQLITE_TRIGGERS = (
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts(rowid, text)
        VALUES (new.id, CASE WHEN new.deleted THEN '' ELSE new.text END);
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, text)
        VALUES ('delete', old.id, CASE WHEN old.deleted THEN '' ELSE old.text END);
    END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF text, deleted ON messages BEGIN
        INSERT INTO messages_fts(messages_fts, rowid, text)
        VALUES ('delete', old.id, CASE WHEN old.deleted THEN '' ELSE old.text END);
        INSERT INTO messages_fts(rowid, text)
        VALUES (new.id, CASE WHEN new.deleted THEN '' ELSE new.text END);
    END""",
)
SQLITE_FILL = (
    "INSERT INTO messages_fts(rowid, text) SELECT id, CASE WHEN deleted THEN '' ELSE text END FROM messages"
)
SQLITE_DROP = (
    "DROP TRIGGER IF EXISTS messages_fts_update",
    "DROP TRIGGER IF EXISTS messages_fts_delete",
    "DROP TRIGGER IF EXISTS messages_fts_insert",
    "DROP TABLE IF EXISTS messages_fts",
)


def create_sqlite_search() -> None:
    """The FTS table and its triggers, filled from the messages already there."""
    op.execute(SQLITE_TABLE)
    for statement in SQLITE_TRIGGERS:
        op.execute(statement)
    op.execute(SQLITE_FILL)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        create_sqlite_search()
    else:
        op.execute(PG_INDEX)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_DROP:
            op.execute(statement)
    else:
        op.execute("DROP INDEX IF EXISTS ix_messages_text_search")
