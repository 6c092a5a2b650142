"""Sphinx configuration for the pyrogen documentation.

Build from the repository root::

    python -m sphinx -b html -W --keep-going docs docs/_build/html

sphinx-gallery executes every ``tutorials/plot_*.py`` on each build. Tutorials read
``PYROGEN_SMOKE=1`` from the environment to run with tiny step counts (as CI does); without
it they run at full length.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyrogen  # noqa: E402

project = "pyrogen"
author = "The pyrogen developers"
copyright = "The pyrogen developers"
release = pyrogen.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]

# Docstrings are Google style: Args / Returns / Raises / Example.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"

# CI has no internet, so there are no intersphinx inventories to fetch.
intersphinx_mapping: dict = {}

sphinx_gallery_conf = {
    "examples_dirs": ["../tutorials"],
    "gallery_dirs": ["auto_tutorials"],
    "filename_pattern": "/plot_",
    "abort_on_example_error": True,
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
}

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

html_theme = "furo"
html_title = f"pyrogen {release}"
