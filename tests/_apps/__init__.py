"""Tiny app modules for the command-line tests (`wirehall routes tests._apps.hello:app`)."""
