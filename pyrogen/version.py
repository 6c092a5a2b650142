"""The package version, in the bottom layer so that any module can read it without importing
the package face (``pyrogen/__init__.py`` imports every layer).

Example:
    >>> from pyrogen.version import __version__
    >>> __version__
    '0.1.0'
"""

__version__ = "0.1.0"
