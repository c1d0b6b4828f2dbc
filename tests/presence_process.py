"""A second process of the app, holding gateways' presence as the gateway would: for cross-process tests.

It builds the app from the environment (``WINDI_*``), runs its lifespan (channels, presence, the
database) and reads commands from standard input, one a line, answering each when done:
``open <user id>`` and ``close <user id>`` (answer ``ok``), ``here <user id>`` (``yes`` or ``no``).
End of input shuts it down gracefully; a kill is a process dying.
"""

from __future__ import annotations

import sys

from litestar.testing import TestClient

from windi_chat.app import create_app
from windi_chat.presence import Presence


def main() -> None:
    app = create_app()
    with TestClient(app=app) as client:
        presence = app.plugins.get(Presence)
        print("ready", flush=True)
        for line in sys.stdin:
            command, user_id = line.split()
            if command == "here":
                print("yes" if presence.here(int(user_id)) else "no", flush=True)
                continue
            call = presence.opened if command == "open" else presence.closed
            client.blocking_portal.call(call, int(user_id))
            print("ok", flush=True)


if __name__ == "__main__":
    main()
