"""wirehall's benchmark suite: `python -m bench` (see docs/benchmarks.md)."""

__all__: list[str] = []
