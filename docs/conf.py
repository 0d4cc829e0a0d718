"""Sphinx configuration: ``make docs`` builds docs/_build/html, warnings as errors."""
from __future__ import annotations

import os
import sys

# autodoc imports the package from this checkout, installed or not.
sys.path.insert(0, os.path.abspath(".."))

project = "flask-spacewalk"
author = "the flask-spacewalk authors"
copyright = "the flask-spacewalk authors"
release = version = "0.1.0"

extensions = ["sphinx.ext.autodoc"]
# No intersphinx: the build must not need the network (CI may have none).

root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_theme_options = {"description": "Job classes as a REST API, on Flask"}

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True}
autodoc_typehints_description_target = "documented_params"
