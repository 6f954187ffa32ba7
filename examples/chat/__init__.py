"""The chat room example: `wirehall run examples.chat:app`.

Configuration comes from the environment: `CHAT_DATABASE_URL` (default
`sqlite+aiosqlite:///chat.db`) and `WIREHALL_BACKPLANE` (default `memory://`).
"""

from examples.chat.app import create_app

__all__ = ["app", "create_app"]

app = create_app()
