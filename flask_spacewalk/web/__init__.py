"""The web layer: the blueprint of each job tree, its docs and console.

Only :mod:`flask_spacewalk.extension` and :mod:`flask_spacewalk.cli` import
it; ``runtime/`` and ``backends/`` never do (``tests/test_architecture.py``).
See ``docs/architecture.rst`` for the one job of each module.
"""
