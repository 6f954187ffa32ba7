"""Tables for the terminal, and the targets the results are judged against."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Target", "evaluate_targets", "render"]

BASELINE = "raw-asgi"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(value: object, base: object) -> str:
    if not isinstance(value, (int, float)) or not isinstance(base, (int, float)) or not base:
        return ""
    return f"({value / base:.2f}x)"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_http(http: dict[str, Any]) -> str:
    if "skipped" in http:
        return f"HTTP: skipped: {http['skipped']}"
    fws = http["frameworks"]
    baseline = http.get("baseline", BASELINE)  # the typed route's floor is raw-msgspec
    base = fws.get(baseline, {}).get("rps")
    base_cpu = fws.get(baseline, {}).get("server_cpu_us_per_request")
    rows = []
    for name, r in fws.items():
        if "error" in r:
            rows.append([name, "error", "", "", "", "", "", "", r["error"][:60]])
            continue
        cpu = r["server_cpu_us_per_request"]
        rows.append(
            [
                name,
                _fmt(r["rps"], 0),
                f"{r['rps'] / base:.2f}x" if base else "",
                _fmt(r["p50_ms"], 2),
                _fmt(r["p99_ms"], 2),
                _fmt(cpu, 1),
                f"{base_cpu / cpu:.2f}x" if base_cpu and cpu else "",
                f"{r['server_cpu_share']:.0%}",
                str(r["errors"]),
            ]
        )
    title = (
        f"{http.get('title', 'HTTP hello world')}: wrk -t1 -c{http['connections']}, {http['rounds']} rounds x "
        f"{http['seconds']:g} s, median per framework"
    )
    header = ["framework", "req/s", "vs raw", "p50 ms", "p99 ms", "CPU us/req", "vs raw", "busy", "errors"]
    note = (
        "(CPU us/req: the server's CPU time per request; its 'vs raw' is raw's divided by this,\n"
        " i.e. the req/s ratio on a quiet CPU. busy: the share of the run the server spent on a CPU.)"
    )
    return title + "\n" + _table(header, rows) + "\n" + note


REFERENCE = "socketify"

Getter = Callable[[dict[str, Any]], Any]
# a row: label, value, digits, ratio to socketify too, raw ASGI's value beside it (None: raw's column)
_Metric = tuple[str, Getter, int, bool, Getter | None]


def _present(r: dict[str, Any] | None) -> bool:
    return bool(r) and "error" not in (r or {})


def _get(r: dict[str, Any] | None, get: Callable[[dict[str, Any]], Any]) -> Any:
    if not _present(r):
        return None
    try:
        return get(r or {})
    except (KeyError, TypeError):
        return None


def _cell(
    fws: dict[str, Any],
    name: str,
    get: Callable[[dict[str, Any]], Any],
    digits: int = 1,
    vs_reference: bool = False,
    base_of: Callable[[dict[str, Any]], Any] | None = None,
) -> str:
    """The value, then its ratio to raw ASGI (`base_of(r)` when given: raw ASGI as measured
    beside this framework), and to socketify when `vs_reference`."""
    r = fws[name]
    if not _present(r):
        return "left out"
    value = _get(r, get)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        if value is None:
            return "-"
        return {True: "yes", False: "no"}.get(value, str(value)) if isinstance(value, bool) else str(value)
    ratios = []
    base = _get(r, base_of) if base_of else _get(fws.get(BASELINE), get)
    if name != BASELINE and isinstance(base, (int, float)) and base:
        ratios.append(f"{value / base:.2f}x")
    ref = _get(fws.get(REFERENCE), get)
    if vs_reference and name != REFERENCE and isinstance(ref, (int, float)) and ref:
        ratios.append(f"{value / ref:.1f}x uWS")
    return _fmt(value, digits) + (f" ({', '.join(ratios)})" if ratios else "")


def render_ws(ws: dict[str, Any]) -> str:
    fws = ws["frameworks"]
    s = ws["settings"]
    names = list(fws)

    def slow(r: dict[str, Any]) -> Any:
        sc = r["slow_consumer"]
        if sc["stalled"]:
            return "stalled"
        return sc.get("added_ms")

    def mem(r: dict[str, Any]) -> float | None:
        value = r["memory_per_connection_bytes"]
        return None if value is None else float(value) / 1024

    small, big = s["small_room"], s["big_room"]
    conns = s.get("memory_connections_measured", s.get("memory_connections"))
    cpu = "server CPU us/delivery"

    def big_base(r: dict[str, Any]) -> Any:
        return r["fanout_big"]["baseline_median_ms"]

    def big_cpu_base(r: dict[str, Any]) -> Any:
        return r["fanout_big"]["baseline_cpu_us_per_delivery"]

    metrics: list[_Metric] = [
        (f"echo round trips/s ({s['echo_clients']} clients)", lambda r: r["echo_per_s"], 0, False, None),
        ("echo round trips/s, best window", lambda r: r["echo_best_per_s"], 0, False, None),
        ("echo p99 ms", lambda r: r["echo_p99_ms"], 2, False, None),
        ("echo: server busy (share of its CPU)", lambda r: r["echo_server_cpu_share"], 2, False, None),
        ("server CPU us/echo round trip", lambda r: r["server_cpu_us"]["echo_round_trip"], 1, True, None),
        (f"fan-out {small} median ms", lambda r: r["fanout_small"]["median_ms"], 1, False, None),
        (f"fan-out {small} p95 ms", lambda r: r["fanout_small"]["p95_ms"], 1, False, None),
        (f"fan-out {small} min ms", lambda r: r["fanout_small"]["min_ms"], 1, False, None),
        (f"{cpu}, fan-out {small}", lambda r: r["server_cpu_us"]["fanout_small_delivery"], 2, True, None),
        (f"fan-out {big} median ms", lambda r: r["fanout_big"]["median_ms"], 1, False, big_base),
        (f"fan-out {big} p95 ms", lambda r: r["fanout_big"]["p95_ms"], 1, False, None),
        (f"fan-out {big} min ms", lambda r: r["fanout_big"]["min_ms"], 1, False, None),
        (f"{cpu}, fan-out {big}", lambda r: r["server_cpu_us"]["fanout_big_delivery"], 2, True, big_cpu_base),
        (
            f"fan-out {small} median ms, {s.get('compressed_size', 64)} B, deflate clients",
            lambda r: r["fanout_compressed"]["median_ms"],
            1,
            False,
            None,
        ),
        (
            f"{cpu}, fan-out {small}, deflate",
            lambda r: r["server_cpu_us"]["fanout_compressed_delivery"],
            2,
            False,
            None,
        ),
        (f"idle memory KiB/conn ({conns} conns)", mem, 2, True, None),
        (
            f"slow consumer: {s['slow_size'] // 1024} KiB fan-out {small} median ms",
            lambda r: r["slow_consumer"]["baseline"]["median_ms"],
            1,
            False,
            None,
        ),
        ("slow consumer: added ms with 1 stalled", slow, 2, False, None),
        ("slow consumer: stalled client evicted", lambda r: r["slow_consumer"]["evicted"], 0, False, None),
    ]
    rows = [
        [label, *(_cell(fws, n, get, d, ref, base) for n in names)] for label, get, d, ref, base in metrics
    ]
    title = (
        f"WebSocket ({s['rounds']} room runs, framework order rotated; in brackets the ratio to "
        f"{BASELINE} and, for CPU and memory, to {REFERENCE} (uWS); lower is better but for round trips/s)"
    )
    return title + "\n" + _table(["metric", *names], rows) + _ws_notes(fws, s)


def _ws_notes(fws: dict[str, Any], s: dict[str, Any]) -> str:
    notes = []
    for name, r in fws.items():
        if not _present(r):
            notes.append(f"  {name}: left out: {(r or {}).get('error', 'not measured')}")
            continue
        sc = r["slow_consumer"]
        if sc["stalled"]:
            notes.append(
                f"  {name}: the others stopped receiving after {sc['stalled_after']} broadcasts "
                f"with one client not reading (waited {s['slow_timeout']:g} s): stalled"
            )
        else:
            codes = sc["stalled_client_close_codes"]
            notes.append(
                f"  {name}: {max(sc['broadcasts_while_stalled'])} broadcasts of "
                f"{s['slow_size']} B went by the stalled client; "
                + ("it was closed by the server" if sc.get("evicted") else "it was not closed")
                + f" (close codes it got: {codes})"
            )
        comp = r.get("fanout_compressed")
        if comp is not None:
            negotiated = [a for a in comp["negotiated"] if a] or ["nothing (frames uncompressed)"]
            notes.append(
                f"  {name}: deflate clients: the server answered {' / '.join(negotiated)}; "
                f"{comp['compressed_messages']} messages arrived compressed"
            )
        closed = [code for run in r["runs"]["room"] for code in run["echo"].get("closed_by_server", [])]
        if closed:
            notes.append(
                f"  {name}: the server closed {len(closed)} idle echo connections (close codes {closed})"
            )
        busy = {k: v for k, v in r["client_cpu_share"].items() if v and v > 0.9}
        if busy:
            notes.append(f"  {name}: the load client was the bottleneck here (CPU share {busy})")
        if r["malformed_payloads"]:
            notes.append(f"  {name}: {r['malformed_payloads']} broadcasts arrived with a wrong size")
    return "\n" + "\n".join(notes) if notes else ""


def render_redis(redis: dict[str, Any]) -> str:
    if "skipped" in redis:
        return f"Redis backplane: skipped: {redis['skipped']}"
    modes = redis["modes"]
    base = modes["memory-1proc"]["median_ms"]
    rows = [
        [
            mode,
            _fmt(r["median_ms"], 1),
            _fmt(r["p95_ms"], 1),
            f"{r['median_ms'] / base:.2f}x" if base and r["median_ms"] else "",
            _fmt(r["server_cpu_us_per_delivery"], 1),
            str(r["timeouts"]),
        ]
        for mode, r in modes.items()
    ]
    title = f"Cross-process fan-out to {redis['clients']} clients (wirehall; publish -> last client)"
    return (
        title
        + "\n"
        + _table(["backplane", "median ms", "p95 ms", "vs memory", "CPU us/delivery", "timeouts"], rows)
    )


def render_chat(chat: dict[str, Any]) -> str:
    if "skipped" in chat:
        return f"Chat: skipped: {chat['skipped']}"
    s = chat["settings"]
    rows = []
    notes = []
    for kind, r in chat["databases"].items():
        if "skipped" in r or "error" in r:
            reason = r.get("skipped") or r["error"]
            rows.append([kind, "skipped" if "skipped" in r else "error", *[""] * 8])
            notes.append(f"  {kind}: {reason.splitlines()[0][:100]}")
            continue
        one, many, join, check = r["one_room"], r["many_rooms"], r["join"], r["delivery"]
        faults = sum(check[k] for k in ("missing", "unexpected", "duplicates", "out_of_order"))
        rows.append(
            [
                kind,
                _fmt(one["msgs_per_s"], 0),
                _fmt(many["msgs_per_s"], 0),
                "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
                f"{_fmt(one['servers_cpu_us_per_message'], 0)} / {_fmt(many['servers_cpu_us_per_message'], 0)}",
                f"{_fmt(one['post_p99_ms'], 0)} / {_fmt(many['post_p99_ms'], 0)}",
                _fmt(join["median_ms"], 1),
                _fmt(join["p99_ms"], 1) if join["p99_ms"] is not None else "timeout",
                f"{join['joined']}/{join['joins']}",
                "ok" if not faults and not check["faulty_watchers"] else f"{check['faulty_watchers']} faulty",
            ]
        )
        load = r["load"]
        notes.append(
            f"  {kind}: machine {load['machine_busy_share']:.0%} busy (median of runs), "
            f"{load['others_cpus']:.2f} CPUs used outside the chat servers and the client "
            f"(PostgreSQL, Redis, other work), load average up to {load['load_average']:.1f}; "
            f"chat servers got {one['servers_cpu_share']:.0%} / {many['servers_cpu_share']:.0%} of a CPU "
            f"(1 room / {chat['settings']['rooms']} rooms), {join['usage']['servers_cpu_share']:.0%} during the "
            f"joins at {join['post_rate']:.0f} msgs/s posted"
            + (
                f"; PostgreSQL CPU us/msg {_fmt(one['postgres_cpu_us_per_message'], 0)} / "
                f"{_fmt(many['postgres_cpu_us_per_message'], 0)}"
                if kind == "postgresql"
                else ""
            )
            + f"; {check['watchers']} watchers checked"
            + (f"; {one['errors'] + many['errors']} posts refused" if one["errors"] + many["errors"] else "")
        )
    title = (
        f"Chat (examples.chat): 2 processes over Redis; {s['posters']} HTTP posters for {s['seconds']:g} s "
        f"(median of {s['rounds']}), {s['watchers']} WebSockets per room; {s['joins']} joins while "
        f"{s['post_rate']:g} msgs/s are posted"
    )
    header = [
        "database",
        "1 room msg/s",
        f"{s['rooms']} rooms msg/s",
        "ratio",
        "CPU us/msg 1/many",
        "post p99 ms 1/many",
        "join med ms",
        "join p99 ms",
        "joined",
        "delivery",
    ]
    note = (
        "(CPU us/msg: both chat processes' CPU time per posted message. delivery: every watcher got\n"
        " each acknowledged message of its room once, in id order.)"
    )
    return title + "\n" + _table(header, rows) + "\n" + note + ("\n" + "\n".join(notes) if notes else "")


@dataclass(frozen=True)
class Target:
    name: str
    wanted: str
    measured: str
    passed: bool | None  # None: not measured
    by_cpu: str = ""  # the same ratio from the server's CPU time per operation


def _cpu_ratio(wh: float | None, raw: float | None, invert: bool = False) -> str:
    if not wh or not raw:
        return ""
    return f"{(raw / wh if invert else wh / raw):.2f}x"


def evaluate_targets(results: dict[str, Any]) -> list[Target]:
    """The project's goals, checked against this run's wall-clock medians."""
    targets: list[Target] = []
    http = results.get("http", {}).get("frameworks", {})
    wh, raw = http.get("wirehall"), http.get(BASELINE)
    if wh and raw and "error" not in wh and "error" not in raw:
        ratio = wh["rps"] / raw["rps"]
        targets.append(
            Target(
                "HTTP req/s",
                ">= 0.85x raw ASGI",
                f"{ratio:.2f}x",
                ratio >= 0.85,
                _cpu_ratio(wh["server_cpu_us_per_request"], raw["server_cpu_us_per_request"], True),
            )
        )
    typed = results.get("http_typed", {}).get("frameworks", {})
    wh, raw = typed.get("wirehall"), typed.get("raw-msgspec")
    if wh and raw and "error" not in wh and "error" not in raw:
        ratio = wh["rps"] / raw["rps"]
        targets.append(
            Target(
                "typed route req/s",
                ">= 0.75x raw msgspec",
                f"{ratio:.2f}x",
                ratio >= 0.75,
                _cpu_ratio(wh["server_cpu_us_per_request"], raw["server_cpu_us_per_request"], True),
            )
        )
    targets.extend(_ws_targets(results.get("ws", {})))
    targets.extend(_chat_targets(results.get("chat", {})))
    return targets


# (framework, echo >= x raw, fan-out <= x raw, idle memory rule, judged against uWS CPU)
_WS_GOALS = (
    ("wirehall-native", 1.2, 0.75, "mem_kb", True),
    ("wirehall-asgi", 0.9, 1.1, "mem_raw", False),
)


def _ws_targets(ws: dict[str, Any]) -> list[Target]:
    fws = ws.get("frameworks", {})
    raw, ref = fws.get(BASELINE), fws.get(REFERENCE)
    targets: list[Target] = []
    if not _present(raw):
        return targets
    size = ws["settings"]
    for name, echo_x, fan_x, memory_rule, vs_ref in _WS_GOALS:
        wh = fws.get(name)
        if not _present(wh):
            if name in fws:
                targets.append(Target(f"{name}: measured", "runs", "left out", None))
            continue
        wcpu, rcpu = wh["server_cpu_us"], raw["server_cpu_us"]
        ratio = wh["echo_per_s"] / raw["echo_per_s"]
        targets.append(
            Target(
                f"{name}: echo round trips/s",
                f">= {echo_x:g}x raw ASGI",
                f"{ratio:.2f}x",
                ratio >= echo_x,
                _cpu_ratio(wcpu["echo_round_trip"], rcpu["echo_round_trip"], True),
            )
        )
        for key, n in (("fanout_small", size["small_room"]), ("fanout_big", size["big_room"])):
            mine = wh.get(key) or {}
            a = mine.get("median_ms")
            # at the big room, raw ASGI as measured by the same client process
            b = mine.get("baseline_median_ms") or (raw.get(key) or {}).get("median_ms")
            base_cpu = mine.get("baseline_cpu_us_per_delivery") or rcpu[f"{key}_delivery"]
            by_cpu = _cpu_ratio(wcpu[f"{key}_delivery"], base_cpu)
            if a is None or b is None:
                targets.append(
                    Target(f"{name}: fan-out {n} median", f"<= {fan_x:g}x raw ASGI", "no samples", False)
                )
                continue
            targets.append(
                Target(
                    f"{name}: fan-out {n} median",
                    f"<= {fan_x:g}x raw ASGI",
                    f"{a / b:.2f}x",
                    a / b <= fan_x,
                    by_cpu,
                )
            )
        if vs_ref and _present(ref):
            for key, n in (("fanout_small", size["small_room"]), ("fanout_big", size["big_room"])):
                mine, theirs = wcpu[f"{key}_delivery"], ref["server_cpu_us"][f"{key}_delivery"]
                if mine and theirs:
                    targets.append(
                        Target(
                            f"{name}: server CPU/delivery, {n}",
                            "<= 1.3x uWebSockets",
                            f"{mine / theirs:.2f}x ({mine:.2f} vs {theirs:.2f} us)",
                            mine / theirs <= 1.3,
                        )
                    )
        sc = wh["slow_consumer"]
        if sc["stalled"]:
            targets.append(Target(f"{name}: stalled client", "adds < 10 ms, evicted", "stalled", False))
        else:
            added = sc.get("added_ms")
            evicted = bool(sc.get("evicted"))
            targets.append(
                Target(
                    f"{name}: stalled client",
                    "adds < 10 ms, evicted",
                    f"{_fmt(added, 2)} ms, " + ("evicted" if evicted else "not evicted"),
                    added is not None and added < 10 and evicted,
                )
            )
        mine_mem, raw_mem = wh.get("memory_per_connection_bytes"), raw.get("memory_per_connection_bytes")
        conns = size.get("memory_connections_measured")
        if mine_mem is None:
            continue
        if memory_rule == "mem_kb":
            targets.append(
                Target(
                    f"{name}: idle memory/conn at {conns}",
                    "<= 8 KB",
                    f"{mine_mem / 1000:.2f} KB",
                    mine_mem <= 8000,
                )
            )
        elif raw_mem is not None:
            diff = (mine_mem - raw_mem) / 1000
            targets.append(
                Target(f"{name}: idle memory/conn", "within 3 KB of raw ASGI", f"{diff:+.2f} KB", diff <= 3)
            )
    return targets


def _chat_targets(chat: dict[str, Any]) -> list[Target]:
    targets: list[Target] = []
    for kind, r in chat.get("databases", {}).items():
        if "skipped" in r or "error" in r:
            continue
        rooms = chat["settings"]["rooms"]
        if kind == "postgresql":
            ratio = r["ratio"]
            targets.append(
                Target(
                    f"chat {kind}: {rooms} rooms / 1 room",
                    ">= 5x msgs/s",
                    "-" if ratio is None else f"{ratio:.2f}x",
                    None if ratio is None else ratio >= 5,
                )
            )
        p99 = r["join"]["p99_ms"]
        targets.append(
            Target(
                f"chat {kind}: join p99",
                f"< 50 ms at {chat['settings']['post_rate']:g} msgs/s",
                "timeout" if p99 is None else f"{p99:.1f} ms",
                p99 is not None and p99 < 50,
            )
        )
        check = r["delivery"]
        faults = sum(check[k] for k in ("missing", "unexpected", "duplicates", "out_of_order"))
        targets.append(
            Target(
                f"chat {kind}: delivery",
                "every message once, in order",
                f"{faults} faults in {check['watchers']} watchers",
                faults == 0 and not check["faulty_watchers"],
            )
        )
    return targets


def render_presence(presence: dict[str, Any]) -> str:
    rows = [
        [
            count,
            _fmt(r["server_cpu_s"], 2),
            _fmt(r["payload_mb"]),
            str(r["presence_frames"]),
            _fmt(r["min_presence_gap_ms"]),
            _fmt(r["welcome_p50_ms"]),
            _fmt(r["welcome_p99_ms"]),
            _fmt(r["leave_server_cpu_s"], 2),
        ]
        for count, r in presence["runs"].items()
    ]
    header = ["joins", "server CPU s", "MB to clients", "presence frames", "min gap ms"]
    header += ["welcome p50 ms", "welcome p99 ms", "leaves CPU s"]
    return (
        f"Presence (examples.chat, 1 process, SQLite): a crowd joins one room at "
        f"{presence['settings']['rate']:g}/s with 32-character names\n" + _table(header, rows)
    )


def render_targets(targets: list[Target]) -> str:
    if not targets:
        return "Targets: nothing to judge (wirehall or the baseline was not measured)"
    rows = [
        [t.name, t.wanted, t.measured, {True: "PASS", False: "MISS", None: "-"}[t.passed], t.by_cpu]
        for t in targets
    ]
    return (
        "Targets (wirehall; judged on wall-clock medians; 'by server CPU' is the same ratio from\n"
        "the server's CPU time per operation, which other load on the machine hardly moves)\n"
        + _table(["target", "wanted", "measured", "", "by server CPU"], rows)
    )


def render(results: dict[str, Any]) -> str:
    parts = []
    env = results["environment"]
    parts.append(
        f"wirehall benchmarks  {results['started']}  commit {env['commit']}\n"
        f"python {env['python']}  uvicorn {env['uvicorn']}  starlette {env['starlette']}  "
        f"websockets {env['websockets']}  CPUs {env['cpus']}\n"
        f"uvicorn {' '.join(env['uvicorn_options'])} (1 worker)\n"
        f"{env['placement']}"
    )
    for key, fn in (
        ("http", render_http),
        ("http_typed", render_http),
        ("ws", render_ws),
        ("redis", render_redis),
        ("chat", render_chat),
        ("presence", render_presence),
    ):
        if key in results:
            parts.append(fn(results[key]))
    parts.append(render_targets(evaluate_targets(results)))
    return "\n\n".join(parts)
