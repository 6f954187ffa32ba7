"""The chat room example: `wirehall run examples.chat:app`."""
