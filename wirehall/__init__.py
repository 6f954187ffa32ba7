"""wirehall: an async-first ASGI framework."""
