"""Parsers of single callback values: whole numbers, indices, bounded numbers, choices, text.

Part of the input boundary :mod:`.inputs` (which re-exports every name here): each parser returns a
valid value or raises :class:`BadInput` with a sentence meant for the page. A bool is never a number
(JSON ``true`` is no index) and a negative index is refused, not counted from the end as numpy would.
"""
from __future__ import annotations

import math
import re
from typing import Any

from . import analysis

_SHOWN = 60  # characters of a bad value quoted back: enough to recognise it, not a page of it


class BadInput(ValueError):
    """A callback argument no page of this app could have sent (or a stale one); the message
    says which and why, in words meant for the page."""


def _show(value: Any) -> str:
    """``repr(value)`` cut to :data:`_SHOWN` characters, for quoting a bad value in a message."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


# What a page's number box (dcc.Input type=number) sends when it is empty or holds text or a value outside its
# min/max: None, never the typed text, so a message cannot quote it. (Whole numbers name None as sent: they
# also come from stores, where None is a malformed payload worth quoting.)
_EMPTY_BOX = "the box is empty or holds no number in that range"


def whole(value: Any, what: str) -> int:
    """An integer (an integral float is accepted, a bool is not: JSON ``true`` is no index)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadInput(f"{what} must be a whole number, not {_show(value)}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise BadInput(f"{what} must be a whole number, not {_show(value)}")
    return int(value)


def index(value: Any, n: int, what: str = "test image") -> int:
    """A position in ``[0, n)``: negative ones are refused, not counted from the end."""
    i = whole(value, f"the {what} index")
    if not 0 <= i < n:
        raise BadInput(f"{what} index {i} is outside 0..{n - 1}")
    return i


def class_index(value: Any, k: int) -> int:
    """A class of a ``k``-class run."""
    c = whole(value, "the class")
    if not 0 <= c < k:
        raise BadInput(f"class {c} is outside 0..{k - 1}")
    return c


def page(value: Any) -> int:
    """A gallery page: missing means the first, below 0 is the first (the end is clamped by ``page_of``)."""
    return 0 if value is None else max(whole(value, "the page"), 0)


def number(value: Any, what: str, low: float, high: float, *, low_open: bool = False) -> float:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
    if value is None:
        raise BadInput(f"{what} needs a number in {interval}: {_EMPTY_BOX}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (low < value if low_open else low <= value) or not value <= high:
        raise BadInput(f"{what} must be a number in {interval}, not {_show(value)}")
    return float(value)


def probability(value: Any, what: str = "the threshold") -> float:
    """A finite number in ``[0, 1]``."""
    return number(value, what, 0.0, 1.0)


def one_of(value: Any, choices, what: str) -> str:
    """One of a fixed set of strings (checked as a string first: a list is not hashable)."""
    if not isinstance(value, str) or value not in choices:
        raise BadInput(f"unknown {what} {_show(value)}; use one of {', '.join(choices)}")
    return value


def text(value: Any, what: str) -> str | None:
    """A string, or None when missing (an upload's contents, a file name)."""
    if value is not None and not isinstance(value, str):
        raise BadInput(f"{what} must be text, not {_show(value)}")
    return value


def checklist(value: Any, choices, what: str) -> list[str]:
    """A checklist's value: a list of some of ``choices``; missing means none ticked."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v in choices for v in value):
        raise BadInput(f"{what} must be a list of some of {', '.join(choices)}, not {_show(value)}")
    return value


_CLASS = re.compile(r"\d{1,6}")


def target(value: Any, k: int) -> str:
    """An explanation's target class as the explanations view names it: ``"pred"``, ``"true"`` or a class
    of a ``k``-class run as its index in text (``"3"``)."""
    if value in ("pred", "true"):
        return value
    if isinstance(value, str) and _CLASS.fullmatch(value):
        return str(class_index(int(value), k))
    raise BadInput(f"unknown target {_show(value)}; use pred, true or a class index 0..{k - 1}")


def sort_key(value: Any) -> str:
    """A key of :data:`analysis.SORT_KEYS`; missing means the default order."""
    return "confidence" if value is None else one_of(value, analysis.SORT_KEYS, "sort order")


def confidence_range(value: Any) -> tuple[float, float]:
    """A range slider's ``[low, high]`` of the top-1 probability, ``0 <= low <= high <= 1``; missing
    means every image."""
    if value is None:
        return 0.0, 1.0
    if not isinstance(value, list) or len(value) != 2:
        raise BadInput(f"the confidence range must be [low, high], not {_show(value)}")
    low, high = (probability(v, "a confidence bound") for v in value)
    if low > high:
        raise BadInput(f"the confidence range {low:g}-{high:g} is empty: the low end is above the high end")
    return low, high


def label_set(value: Any) -> str:
    """The header's label-set switch (:data:`.corrected.LABEL_SETS`); missing means the original labels."""
    from .corrected import LABEL_SETS

    return "original" if value is None else one_of(value, LABEL_SETS, "label set")
