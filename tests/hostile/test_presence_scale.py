"""A crowd joining one chat room: presence costs bounded work, not a list per member per change.

`wirehall run examples.chat:app` (a temporary SQLite database, the memory backplane, no
access log) and 1,000 raw WebSocket clients (`bench.presence_bench.crowd`: a few integer
operations per frame, so that the client's cost stays small next to the server's) joining
one room at 400 a second with 32-character names. Before presence was coalesced, 300 such
clients cost the server 6.3 s of CPU and 640 MB sent; the cost grew with the cube of the
crowd's size.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from bench.presence_bench import crowd
from bench.procfs import cpu_seconds
from tests.hostile._server import wirehall_run

CROWD = 1000
RATE = 400.0  # joins a second: the whole crowd within 2.5 s
NAME = 32  # bytes of each name (`bench.presence_bench.user_name`)
# The smallest possible: every client's last list names everybody (NAME + 3 bytes each).
FINAL_LISTS_MB = CROWD * CROWD * (NAME + 3) / 1e6


@pytest.mark.timeout(60)
async def test_a_thousand_joins_cost_bounded_cpu_and_bytes_and_lists_stay_current(
    tmp_path: Path, unused_port: int, server_ws: str
) -> None:
    env = {"CHAT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'chat.db'}"}
    options = ("--no-access-log", "--log-level", "warning")
    with wirehall_run(
        unused_port, tmp_path / "server.log", *options, app="examples.chat:app", env=env, ws=server_ws
    ) as server:
        pid = server.process.pid
        before = cpu_seconds(pid)
        people = await crowd(server.port, "hall", CROWD, RATE)
        try:
            # every client's last list names everybody
            elapsed = people.join_seconds + await people.wait_settled(CROWD, timeout=30)
            cpu = cpu_seconds(pid) - before
            sent_mb = people.payload_bytes / 1e6
            frames = people.presence_frames
            gap = people.min_presence_gap
            most = max(member.presence_frames for member in people.members)
            welcome = sorted(people.welcome_ms)
        finally:
            await people.close()
    p99 = welcome[math.ceil(0.99 * len(welcome)) - 1]
    summary = (
        f"server CPU {cpu:.2f} s, {sent_mb:.1f} MB to clients in {frames} presence frames, "
        f"at most {most} to one client in {elapsed:.1f} s (shortest gap {gap * 1000:.0f} ms), welcome median {statistics.median(welcome):.1f} ms "
        f"p99 {p99:.1f} ms"
    )
    print(summary)  # noqa: T201  # the figures, shown with -s
    # A join's own path (handshake, history read, welcome) costs about 1 ms of CPU on a
    # shared 2-core machine; presence adds about 0.25 s in all. Quadratic presence would
    # take minutes here.
    assert cpu < 3.0, summary
    # at most ~2x what the final lists alone take (with 4 full lists a second: ~4x, before: ~300x)
    assert sent_mb < 2.5 * FINAL_LISTS_MB, summary
    assert frames < 6 * CROWD, summary
    # at most 4 presence frames a second per client (the gap between two is measured where
    # they arrive, which a busy client delays, so it is shown rather than asserted)
    assert most <= 4 * elapsed + 1, summary
    # The spec's target is 50 ms p99 with the server to itself (`make bench` measures that);
    # here the crowd shares the two cores with it and with whatever else runs, so the bound
    # only catches the quadratic case (over a second at 300 members).
    assert p99 < 1000, summary
