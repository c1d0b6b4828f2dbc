"""Demo data: three people, a private chat, a group and a few messages, with a reply, an edit, a reaction
and a delete among them. Running it again adds nothing.

It goes through the same services and actions as the API, so the demo data obeys every rule; fixed
client ids make the messages idempotent like any client's retries, and the changes are idempotent too.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from windi_chat.accounts import UserService
from windi_chat.chats import ChatService
from windi_chat.config import Settings
from windi_chat.database import create_db_config, migrate
from windi_chat.events import EventBus, discard
from windi_chat.message_changes import delete_message, edit_message, react
from windi_chat.messaging import mark_read, send_message
from windi_chat.models import Chat, ChatType
from windi_chat.schemas import GroupChatCreate, RegisterIn
from windi_chat.security import PasswordHasher

__all__ = ("DEMO_PEOPLE", "create_demo_data")

DEMO_PEOPLE = (
    ("Ada Lovelace", "ada@demo.windi.chat", "ada-demo-password"),
    ("Bob Kahn", "bob@demo.windi.chat", "bob-demo-password"),
    ("Cy Grace", "cy@demo.windi.chat", "cy-demo-password"),
)
GROUP_NAME = "WinDI demo group"


async def create_demo_data(settings: Settings) -> list[str]:
    """Create what is missing and return lines that tell a person how to log in."""
    db_config = create_db_config(settings)
    engine = db_config.get_engine()
    hasher = PasswordHasher(settings.argon2_time_cost, settings.argon2_memory_kib)
    events = EventBus(discard)  # no server runs while the demo data is loaded: nobody to tell
    lines = ["Demo accounts (log in at /docs with Authorize, or POST /login):"]
    try:
        await migrate(engine)
        async with db_config.get_session() as session:
            users = UserService(session=session)
            people: list[int] = []
            for name, email, password in DEMO_PEOPLE:
                user = await users.get_one_or_none(email=email)
                if user is None:
                    user = await users.register(RegisterIn(name=name, email=email, password=password), hasher)
                people.append(user.id)  # plain ids: a rolled-back repeat below expires ORM objects
                lines.append(f"  {email:<24} password: {password}")
            ada, bob, cy = people

            chats = ChatService(session=session)
            private, _ = await chats.open_private(ada, bob, events)
            group_id = await session.scalar(
                select(Chat.id).where(
                    Chat.type == ChatType.GROUP, Chat.name == GROUP_NAME, Chat.creator_id == ada
                )
            )
            if group_id is None:
                group = GroupChatCreate(GROUP_NAME, [bob, cy])
                group_id = (await chats.create_group(ada, group, settings.max_group_members, events)).id

            script = [
                (private.id, ada, "demo-1", "Hi Bob! Welcome to WinDI Chat."),
                (private.id, bob, "demo-2", "Thanks Ada, the read receipts are neat."),
                (group_id, ada, "demo-3", "Hello both, this is the demo group."),
                (group_id, cy, "demo-4", "Hi! Messages here are numbered per chat."),
            ]
            seqs: list[int] = []
            for chat_id, sender, client_id, text in script:
                sent = await send_message(session, events, chat_id, sender, client_id, text)
                seqs.append(sent.message.seq)
            await mark_read(session, events, private.id, ada, 2)
            await _changes(session, events, group_id, (ada, bob, cy), (seqs[2], seqs[3]), settings)
        lines.append(
            f"Chats: a private chat (id {private.id}) of Ada and Bob, and '{GROUP_NAME}' (id {group_id})."
        )
    finally:
        await engine.dispose()
    return lines


async def _changes(
    session: AsyncSession,
    events: EventBus,
    group_id: int,
    people: tuple[int, int, int],
    seqs: tuple[int, int],
    settings: Settings,
) -> None:
    """In the group: Bob answers Ada's hello, Cy edits her message, Ada reacts, Bob takes one back."""
    ada, bob, cy = people
    hello, numbered = seqs
    max_reactions = settings.max_reactions_per_message
    reply = await send_message(session, events, group_id, bob, "demo-5", "Hi Ada, glad to be here!", hello)
    await edit_message(
        session,
        events,
        group_id,
        cy,
        numbered,
        "Hi! Messages here are numbered per chat, and edits keep their number.",
    )
    await react(session, events, group_id, ada, reply.message.seq, "👍", on=True, max_reactions=max_reactions)
    mistake = await send_message(session, events, group_id, bob, "demo-6", "Oops, wrong chat.")
    await delete_message(session, events, group_id, bob, mistake.message.seq)
