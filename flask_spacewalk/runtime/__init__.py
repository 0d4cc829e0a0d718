"""The ZeroG-compatible job runtime: jobs, records, registry and worker.

Nothing in this package imports Flask.
"""
