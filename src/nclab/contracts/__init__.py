"""Typed contracts between layers: frozen records parsed once at the edge, each with its one table of
settings (name, type, allowed values, default, help) from which configs and the CLI derive theirs.

This package sits at the bottom of the import order (next to ``nclab.utils``): every layer may read it, it
imports no other part of nclab but ``nclab.utils``.
"""
