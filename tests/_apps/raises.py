"""A module that fails while being imported."""

raise RuntimeError("this module is broken on purpose")
