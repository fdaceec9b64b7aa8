"""Peer adapters for the benchmarks. Each ``*.py`` here except ``venvs.py`` runs inside one
peer's own venv (see ``venvs.PEERS``), so they import nothing from modelmon."""
