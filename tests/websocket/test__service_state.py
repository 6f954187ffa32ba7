"""A room's members and the outboxes the fan-out loop reads: never stale after a change."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from wirehall.websocket._service_state import Members, send_all


class _Handler:
    def __init__(self, name: str) -> None:
        self.name = name
        self._outbox = _Outbox(name)


class _Outbox:
    _direct = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.got: list[Any] = []

    def put_nowait(self, message: Any) -> None:
        self.got.append(message)


_NAMES = st.sampled_from(["a", "b", "c", "d"])
_OPS = st.one_of(
    st.tuples(st.just("set"), _NAMES),
    st.tuples(st.just("del"), _NAMES),
    st.tuples(st.just("pop"), _NAMES),
    st.tuples(st.just("popitem"), st.none()),
    st.tuples(st.just("setdefault"), _NAMES),
    st.tuples(st.just("update"), _NAMES),
    st.tuples(st.just("ior"), _NAMES),
    st.tuples(st.just("clear"), st.none()),
)


def _apply(target: dict[str, Any], op: str, name: str | None, handler: Any) -> None:
    if op == "set":
        target[name] = handler  # type: ignore[index]
    elif op == "del" and name in target:
        del target[name]
    elif op == "pop":
        target.pop(name, None)  # type: ignore[arg-type]
    elif op == "popitem" and target:
        target.popitem()
    elif op == "setdefault":
        target.setdefault(name, handler)  # type: ignore[arg-type]
    elif op == "update":
        target.update({name: handler})  # type: ignore[dict-item]
    elif op == "ior":
        target |= {name: handler}  # type: ignore[dict-item]
    elif op == "clear":
        target.clear()


@settings(max_examples=200, deadline=None)
@given(st.lists(_OPS, max_size=30))
def test_the_kept_outboxes_always_follow_the_members(ops: list[tuple[str, str | None]]) -> None:
    members = Members()
    model: dict[str, Any] = {}
    for step, (op, name) in enumerate(ops):
        handler = _Handler(f"{name}{step}")
        _apply(members, op, name, handler)
        _apply(model, op, name, handler)
        ids, outboxes = members.outboxes()
        assert ids == tuple(model)
        assert outboxes == tuple(h._outbox for h in model.values())


def test_a_broadcast_reaches_who_is_in_the_room_at_the_time() -> None:
    members: Any = Members()
    ann, bob, cy = _Handler("ann"), _Handler("bob"), _Handler("cy")
    members["ann"], members["bob"] = ann, bob
    assert send_all(members, {"type": "websocket.send", "text": "one"}, ()) == 2
    members.pop("ann")
    members["cy"] = cy
    assert send_all(members, {"type": "websocket.send", "text": "two"}, ("bob",)) == 1
    assert [m["text"] for m in ann._outbox.got] == ["one"]
    assert [m["text"] for m in bob._outbox.got] == ["one"]
    assert [m["text"] for m in cy._outbox.got] == ["two"]
