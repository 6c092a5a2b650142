"""Guides for any Pyro model (not tied to one family)."""

from __future__ import annotations

from pyrogen.guides.autoflow import AutoFlow, psis_khat

__all__ = ["AutoFlow", "psis_khat"]
