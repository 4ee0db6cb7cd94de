"""Wording shared by the command line and the docks."""


def plural(n: int, noun: str) -> str:
    """``1 scan``, ``3 scans``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
