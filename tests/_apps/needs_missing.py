"""A module whose own import of a missing package fails."""

import importlib

importlib.import_module("wirehall_no_such_package_anywhere")
