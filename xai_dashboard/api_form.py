"""What a request to the REST API (:mod:`.api`) sends, checked before any work: form fields and query
parameters as typed values, or :class:`ApiError` with a message quoting the field.

Method parameters go by their API names from the attribution registry (:mod:`.methods`), which also
sets their limits (checked by :meth:`.explain_spec.Settings.resolved`).
"""
from __future__ import annotations

from typing import NamedTuple

from .explain_spec import METHODS, Settings
from .images import shown

FORMATS = ("png", "json")  # /api/explain's answers: an overlay PNG or the map as JSON


class ApiError(Exception):
    """A request the API refuses: ``status`` 400 (bad input) or 404 (unknown run), message for the client."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def int_field(form, name: str, default: int) -> int:
    """Field ``name`` of ``form`` (or query ``args``) as an int; ``default`` when missing or empty."""
    raw = form.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(f"field {name!r} must be an integer, got {raw!r}") from None


def float_field(form, name: str, default: float, lo: float, hi: float) -> float:
    """Field ``name`` as a number in ``[lo, hi]`` (NaN and infinities refused); ``default`` when missing."""
    raw = form.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not lo <= value <= hi:
        raise ApiError(f"field {name!r} must be a number in [{lo}, {hi}], got {raw!r}")
    return value


def flag_field(form, name: str) -> bool:
    """Field ``name`` as ``"0"`` (also when missing) or ``"1"``."""
    raw = form.get(name) or "0"
    if raw not in ("0", "1"):
        raise ApiError(f"field {name!r} must be 0 or 1, got {raw!r}")
    return raw == "1"


def settings_from_form(form, meta: dict) -> Settings:
    """Form fields ``method``, ``layer`` and the chosen method's parameters, under their API names from
    the registry (:mod:`.methods`: ``steps`` for IG's ``ig_steps``) -> resolved Settings.
    Fields of other methods are ignored, as a page may send them all."""
    method = form.get("method") or Settings().method
    params = {p.name: int_field(form, p.field, p.default) for p in getattr(METHODS.get(method), "params", ())}
    return Settings(method, form.get("layer") or None, **params).resolved(meta)


class ExplainAsk(NamedTuple):
    """What a ``/api/explain`` form asks for besides the image and the run."""

    fmt: str                # an entry of FORMATS
    settings: Settings      # method, layer and the method's parameters, resolved for the run
    alpha: float            # overlay opacity in [0, 1]
    target: str             # "pred" (default), a class name or a class index
    versus: str | None      # a second class: the map explains target minus versus
    scored: bool            # faithfulness=1: also score the map (format=json only)


def explain_ask(form, run) -> ExplainAsk:
    """The explain form's fields for LoadedRun ``run``, checked in the order their errors are reported
    (format first), all before the image is read; a scored request over the run's time budget is refused
    here too."""
    fmt = (form.get("format") or "png").lower()
    if fmt not in FORMATS:
        raise ApiError(f"unknown format {shown(fmt)!r}; use png or json")
    settings = settings_from_form(form, run.meta)
    alpha = float_field(form, "alpha", 0.5, 0.0, 1.0)
    spec, versus = form.get("target") or "pred", form.get("versus")
    scored = flag_field(form, "faithfulness")
    if scored and (fmt != "json" or versus):
        raise ApiError("faithfulness=1 needs format=json and a single target class (no 'versus')")
    if scored:
        from .map_faithfulness import affordable_steps

        affordable_steps(run)  # over the budget even with coarse curves: 400 before any work
    return ExplainAsk(fmt, settings, alpha, spec, versus, scored)
