"""Wording shared by the command line and the docks."""


def plural(n: int, noun: str) -> str:
    """``1 scan``, ``3 scans``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def first_of(items: list[str], shown: int = 10) -> str:
    """The first ``shown`` items joined by "; ", and how many more there are."""
    more = f"; … {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more
