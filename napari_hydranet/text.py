"""Wording shared by the command line and the docks."""

import math
import re


def plural(n: int, noun: str) -> str:
    """``1 scan``, ``3 scans``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def figure(value, digits: int = 2) -> str:
    """A score with ``digits`` decimals, or "–" where it is undefined (None, as JSON's null; NaN)."""
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def signed(value, digits: int = 2) -> str:
    """``figure`` with its sign always shown (a bias, a limit of agreement)."""
    return "–" if value is None or not math.isfinite(value) else f"{value:+.{digits}f}"


def note_kind(note: str) -> str:
    """What a per-scan note ("<scan>: <text>") says, without its scan and with its numbers as
    "#": notes of one kind on several scans (each scan's voxel size) compare equal."""
    return re.sub(r"\d+(\.\d+)?", "#", note.partition(": ")[2])


def first_of(items: list[str], shown: int = 10) -> str:
    """The first ``shown`` items joined by "; ", and how many more there are."""
    more = f"; … {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


def json_safe(value):
    """``value`` with NaN and ±inf as None (JSON null), so its JSON is strict: jq and
    JavaScript refuse the NaN that Python writes."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
