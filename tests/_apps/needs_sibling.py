"""A module importing a missing module whose name is a prefix of this module's name."""

import importlib

importlib.import_module("tests._apps.needs")
