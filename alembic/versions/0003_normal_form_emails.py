"""Emails in their normal form: NFKC and case-folded, as registration and login now compare them.

Earlier revisions stored ``email.strip().lower()``. For ASCII addresses that is already the normal
form; an address with other characters ("Straße", a decomposed accent) is rewritten, so its owner can
still log in with any spelling. When two accounts fold to one address, or the folded form is too long
for the column, the row is left as it was and logged: an operator decides which account keeps it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import logging
import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("alembic.runtime.migration")

EMAIL_MAX_LENGTH = 320
users = sa.table("users", sa.column("id", sa.Integer), sa.column("email", sa.String))


def _normal_form(email: str) -> str:
    # As windi_chat.accounts.normalise_email; copied so this revision never changes with the code.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email.strip()).casefold())


def upgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(users.c.id, users.c.email)).all()
    taken = {email for _id, email in rows}
    for user_id, email in rows:
        normal = _normal_form(email)
        if normal == email:
            continue
        if normal in taken or len(normal) > EMAIL_MAX_LENGTH:
            logger.warning(
                "User %s keeps an email outside the normal form: another has it, or too long", user_id
            )
            continue
        connection.execute(sa.update(users).where(users.c.id == user_id).values(email=normal))
        taken.discard(email)
        taken.add(normal)


def downgrade() -> None:
    """Nothing to undo: the normal form is also a valid lower-case address."""
