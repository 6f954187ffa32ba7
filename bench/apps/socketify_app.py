"""socketify (uWebSockets, C++): the physical reference, run as `python -m bench.apps.socketify_app --port N`.

The same protocol as the other apps: `GET /` answers `Hello, world!`; on `/ws` every connection
subscribes to the topic "bench", `e...` is echoed back and `b<payload>` is published as
`<payload>` to every subscriber (the sender too: `App.publish`, not `WebSocket.publish`).
Broadcast is uWebSockets' own pub/sub: one call from Python, the fan-out in C++.

A subscriber with more than `--max-backpressure` bytes waiting is closed (uWebSockets'
`closeOnBackpressureLimit`), like wirehall's byte budget for slow consumers.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from socketify import App, OpCode  # type: ignore[import-untyped]

__all__ = ["main"]

TOPIC = "bench"

logger = logging.getLogger(__name__)


def build(max_backpressure: int) -> Any:
    app = App()
    app.get("/", lambda res, req: res.end("Hello, world!"))

    def on_open(ws: Any) -> None:
        ws.subscribe(TOPIC)

    def on_message(ws: Any, message: Any, opcode: Any) -> None:
        if opcode != OpCode.TEXT or not message:
            return
        if message[0] == "e":
            ws.send(message, OpCode.TEXT)
        elif message[0] == "b":
            app.publish(TOPIC, message[1:], OpCode.TEXT)

    app.ws(
        "/ws",
        {
            "open": on_open,
            "message": on_message,
            "max_payload_length": 1024 * 1024,
            "max_backpressure": max_backpressure,
            "close_on_backpressure_limit": True,
            # pings after 120 s of silence (the load client answers them), as uvicorn pings every 20 s
            "idle_timeout": 120,
            "send_pings_automatically": True,
        },
    )
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.apps.socketify_app")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-backpressure", type=int, default=4 * 1024 * 1024)
    args = parser.parse_args(argv)
    app = build(args.max_backpressure)

    def listening(config: Any) -> None:
        logger.info("socketify listening on %s:%d", args.host, args.port)

    app.listen({"host": args.host, "port": args.port}, listening)
    app.run()


if __name__ == "__main__":
    main()
