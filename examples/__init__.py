"""Example applications built with wirehall."""
