"""A module that raises at import, on line 4."""
VALUE = 1

raise ValueError("boom at import")
