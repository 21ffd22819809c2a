"""The one registry of attribution methods. Torch-free: the first page is built from it.

Adding a method is one :func:`register` call: its name, label, whether it needs a
layer, whether its map is signed, its integer parameters with their
limits, optional cross-parameter limits (``check``), an optional applicability
test on the model (``requires``) and the function that computes it, named as
``"module:function"`` and imported on first use (so torch stays unloaded here).

Everything else derives from this table: :meth:`.explain_spec.Settings.resolved`
(validation), the cache key (:meth:`~.explain_spec.Settings.key`), the page's method
options (:func:`.views.explain_model.method_options`) and parameter inputs
(:mod:`.views.explain_controls`), the API's form fields
(:func:`.api.settings_from_form`) and the parametrised tests.

A compute function has the signature ``fn(model, x, target, settings, signed=False) -> maps``:
``x`` normalised float32 ``(N, C, H, W)``, ``target`` whatever Captum accepts
(see :mod:`.attributions`), ``maps`` a tensor ``(N, H, W)``: non-negative (``shown_as``), which
:func:`.explain.attribute` divides by its per-image maximum for rankings (faithfulness, sanity
checks, the API), or with ``signed=True`` the map with its sign and magnitude kept, which the
page draws on a diverging scale centred on zero (:func:`draws_signed` says when).
A ``requires`` function ``fn(model, x) -> str | None`` returns why the method is not
defined for ``model`` (None when it is); the page disables the option with that
reason and the API answers 400 with it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Mapping

# Occlusion runs one forward pass per window position: bound the count, not window and
# stride separately, so a 224 px run cannot ask for 50,000 passes and a 32 px run keeps
# its finest setting (window 1, stride 1 = 1,024 passes).
MAX_OCCLUSION_PASSES = 1024


@dataclass(frozen=True)
class Param:
    """An integer parameter. ``name`` is the Settings key; ``form`` the API field (default: ``name``)."""

    name: str
    label: str
    default: int
    lo: int
    hi: int
    form: str = ""
    affects_output: bool = True  # False: speed/memory only, so not part of the cache key
    in_page: bool = True         # False: API only (the page keeps the default)

    @property
    def field(self) -> str:
        return self.form or self.name

    def error(self, value) -> str | None:
        if value is None:  # a page's number box sends None when empty, holding text or out of its range
            return (f"{self.name} needs an integer in [{self.lo}, {self.hi}]: "
                    "the box is empty or holds no number in that range")
        if isinstance(value, bool) or not isinstance(value, int) or not self.lo <= value <= self.hi:
            return f"{self.name} must be an integer in [{self.lo}, {self.hi}], got {value!r}"
        return None


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    compute: str                       # "module:function", see the module docstring
    needs_layer: bool = False
    signed: bool = False               # its attributions have both signs: the page draws the signed map
    shown_as: str = ""                 # how the non-negative map (rankings, API) is formed from them
    params: tuple[Param, ...] = ()
    check: Callable[[Mapping[str, int], dict], str | None] | None = None  # (params, meta) -> error
    requires: str | None = None        # "module:function", see the module docstring
    # forward + backward passes of one image (params, meta) -> count: the request's cost, known
    # before any work starts, so an over-budget request is refused instead of started
    passes: Callable[[Mapping[str, int], dict], int] = lambda params, meta: 1

    def function(self) -> Callable:
        return _load(self.compute)

    def requirement(self) -> Callable | None:
        return _load(self.requires) if self.requires else None


def _load(path: str) -> Callable:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


METHODS: dict[str, Method] = {}


def draws_signed(method: str, target) -> bool:
    """Whether the page draws ``method``'s map for ``target`` with its sign: a signed method always, and
    any method for a pair ``(a, b)`` ("why a rather than b": + speaks for a, − for b)."""
    return METHODS[method].signed or isinstance(target, tuple)


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"attribution method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def all_params() -> dict[str, Param]:
    """Every registered parameter by name (one name means one meaning across methods)."""
    out: dict[str, Param] = {}
    for method in METHODS.values():
        for p in method.params:
            if out.setdefault(p.name, p) != p:
                raise ValueError(f"parameter {p.name!r} is declared differently by two methods")
    return out


def occlusion_passes(size: int, window: int, stride: int) -> int:
    """Forward passes Captum's Occlusion makes on a ``size`` px square: window positions per axis, squared."""
    return ((size - window) // stride + 1) ** 2


def _occlusion_check(p: Mapping[str, int], meta: dict) -> str | None:
    size, window, stride = meta["input_size"], p["window"], p["stride"]
    if window > size:
        return f"window {window} is larger than the {size} px input"
    if stride > window:  # Captum would leave pixels between windows unattributed (and assert)
        return f"stride {stride} is larger than window {window}: pixels between windows would never be occluded"
    passes = occlusion_passes(size, window, stride)
    if passes > MAX_OCCLUSION_PASSES:
        fits = [s for s in range(stride, window + 1) if occlusion_passes(size, window, s) <= MAX_OCCLUSION_PASSES]
        hint = f"use stride >= {fits[0]}" if fits else "use a larger window"
        return (f"window {window} / stride {stride} on a {size} px input needs {passes} forward passes; "
                f"the limit is {MAX_OCCLUSION_PASSES}: {hint}")
    return None


_BATCH = Param("internal_batch_size", "Internal batch size", 32, 1, 1024, affects_output=False, in_page=False)
_ATTR = "xai_dashboard.attributions"

register(Method("gradcam", "Grad-CAM", f"{_ATTR}:gradcam", needs_layer=True))
register(Method("guided_gradcam", "Guided Grad-CAM", f"{_ATTR}:guided_gradcam", needs_layer=True, signed=True,
                shown_as="|attribution| summed over colour channels", passes=lambda p, meta: 2,
                requires=f"{_ATTR}:guided_backprop_unsupported"))
register(Method("integrated_gradients", "Integrated Gradients", f"{_ATTR}:integrated_gradients", signed=True,
                shown_as="|attribution| summed over colour channels",
                params=(Param("ig_steps", "IG steps", 32, 2, 256, form="steps"), _BATCH),
                passes=lambda p, meta: p["ig_steps"]))
register(Method("saliency", "Saliency", f"{_ATTR}:saliency", shown_as="max over colour channels of |gradient|"))
register(Method("occlusion", "Occlusion", f"{_ATTR}:occlusion", signed=True,
                shown_as="positive part (score drops) averaged over channels",
                params=(Param("window", "Occlusion window", 8, 1, 256), Param("stride", "Occlusion stride", 4, 1, 256),
                        _BATCH),
                check=_occlusion_check,  # forward passes only: about a third of a forward + backward each
                passes=lambda p, meta: occlusion_passes(meta["input_size"], p["window"], p["stride"]) // 3 + 1))
