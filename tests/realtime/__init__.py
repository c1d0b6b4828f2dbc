"""The chat WebSocket ``/ws/{chat_id}`` against a real uvicorn process, on SQLite and PostgreSQL.

Starting a server takes about two seconds, so this package starts one per database and shares it: every
test makes its own people and chats, and nothing here depends on what another test left behind.

"Nothing else arrived" is proven without sleeping: after the action under test, a later event of the
same chat (a sentinel) is produced, and the frames received before the sentinel are inspected. Events of
one chat reach each socket in the order they were published.
"""
