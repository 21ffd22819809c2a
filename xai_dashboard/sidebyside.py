"""One image through every loaded run, one column per attribution method: the side-by-side grid.

Practitioners compare a map across models (ResNet-18 vs ResNet-50 vs EfficientNet on the same
X-ray), so every run sees the image the way it sees its own images:

* a test image of run A, shown to run B whose test set has A's fingerprint: B's own copy of that
  index (so B's stored prediction and its precomputed Grad-CAM apply);
* shown to run B on another dataset or size: A's original pixels, resized, centre-cropped and
  converted to B's channels by :func:`trainer.preprocess.pil_to_array`, as B's images were;
* an upload: its bytes decoded by :func:`.uploads.decode_image` once per run, with that run's
  preprocessing.

A *source* lives in the page (``dcc.Store(id="sbs-source")``); build it with :func:`test_source`
or :func:`upload_source`, read it back with :func:`parse_source`:

* ``{"kind": "test", "run": name, "index": i}``;
* ``{"kind": "upload", "name": filename, "contents": "data:image/png;base64,..."}``: the file itself,
  at most the upload limit, kept only while it is the grid's source.

Each cell: the run's prediction and probability, the method's map for the predicted class over
the image (maps and predictions through the explain cache), the map's deletion AUC
(:mod:`.faithfulness`, RISE) and, when the run's sanity.json says the method fails the model
randomisation check, why (:func:`.sanity_file.badge_title`). Work is bounded before it starts:
at most :data:`MAX_RUNS` rows x :data:`MAX_METHODS` columns, every method within its registry limits,
every model pass under its run's lock. A cell that fails says why in words; the others still render. No Dash here.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from trainer.preprocess import pil_to_array

from . import uploads
from .explain_spec import Settings, cache_key, image_digest
from .images import shown, to_hwc
from .inputs import BadInput, index as index_of, run_of
from .methods import METHODS
from .overlay import data_url, image_png, overlay_png
from .sanity_file import badge_title, failing_methods, load_sanity

log = logging.getLogger(__name__)
MAX_RUNS, MAX_METHODS = 6, 4
DEFAULT_METHODS = ("gradcam", "saliency")  # the layer method people compare, and one pixel method
# Deletion curves of every run on the same 33 points (0 %, 1/32, ... 100 % of pixels removed): rows of
# different input sizes share one x grid, and a 224 px run costs 2 x 33 forward passes a cell, not 2 x 225.
AUC_STEPS = 32
CELL_SIZE, INPUT_SIZE = 128, 64  # px of each overlay and of each row's input: whole multiples of 32 px inputs


@dataclass
class Cell:
    """One (run, method) cell: ``overlay_src`` a PNG data URL, or ``error`` in words."""

    method: str
    overlay_src: str = ""
    deletion_auc: float | None = None
    error: str = ""
    fails_sanity: str = ""  # the badge's explanation when the method fails this run's randomisation check


@dataclass
class Row:
    """One run: the image as it saw it, its prediction, one :class:`Cell` per method; ``error`` set
    means the run could not see the image at all (then ``cells`` is empty)."""

    run: str
    description: str = ""
    input_src: str = ""
    shape: tuple[int, ...] = ()   # (C, H, W) of the image the run was given
    predicted: str = ""           # the predicted class's name
    probability: float | None = None  # and its probability
    cells: list[Cell] = field(default_factory=list)
    error: str = ""

    @property
    def prediction(self) -> str:
        """As the page shows it: "cat (87.3%)"."""
        return f"{self.predicted} ({self.probability:.1%})" if self.predicted else ""


@dataclass
class Grid:
    methods: list[str]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)  # what was capped, said on the page


# ---------------------------------------------------------------- sources: built, parsed

def test_source(run: str, index: int) -> dict:
    """The source for test image ``index`` of run ``run`` (e.g. a gallery item)."""
    return {"kind": "test", "run": str(run), "index": int(index)}


def upload_source(contents: str | None, filename: str | None, max_bytes: int | None = None) -> dict:
    """The source for a dcc.Upload ``contents`` data URL; :class:`.uploads.UploadError` when it is empty,
    not base64 or over the upload limit (checked before decoding anything)."""
    uploads.parse_data_url(contents, max_bytes)
    return {"kind": "upload", "name": shown(filename or "upload"), "contents": contents}


def parse_source(store, value) -> dict:
    """A source from the page, checked (it may have been crafted): the same dict, or :class:`BadInput`."""
    kind = value.get("kind") if isinstance(value, dict) else None
    if kind == "test":  # store keys, not ``LoadedRun.name``: a folder name loaded twice gets a second key
        run = run_of(store, value.get("run"))
        return test_source(value["run"], index_of(value.get("index"), len(run.labels)))
    if kind == "upload" and isinstance(value.get("contents"), str):
        return {"kind": "upload", "name": shown(value.get("name") or "upload"), "contents": value["contents"]}
    raise BadInput(f"the image to compare must be a test image or an upload, not {shown(repr(value))}")


def chosen(values, allowed: list[str], limit: int, what: str) -> tuple[list[str], list[str]]:
    """``(the first `limit` known values, notes)`` from a multi-select: unknown names are dropped, and
    both drops and the cap are said in a note."""
    values = values if isinstance(values, list) else []
    known = list(dict.fromkeys(v for v in values if isinstance(v, str) and v in allowed))
    unknown = [shown(repr(v)) for v in values if not (isinstance(v, str) and v in allowed)]
    more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""  # a crafted list is not echoed whole
    notes = [f"ignored unknown {what} {', '.join(unknown[:3])}{more}"] if unknown else []
    if len(known) > limit:
        notes.append(f"showing the first {limit} of {len(known)} {what}s: at most {limit} per grid")
    return known[:limit], notes


# ---------------------------------------------------------------- the image each run sees

def converted(image: np.ndarray, meta: dict) -> np.ndarray:
    """Another dataset's uint8 ``(C, H, W)`` -> uint8 ``(in_channels, input_size, input_size)`` for the
    run of ``meta``: as a PIL image through :func:`pil_to_array` (shorter side resized, centre crop,
    RGB <-> grey), exactly as that run's own images were prepared."""
    return pil_to_array(Image.fromarray(to_hwc(image)), int(meta["input_size"]), int(meta["in_channels"]))


def image_for(store, source: dict, run, data: bytes | None) -> tuple[np.ndarray, int | None, str]:
    """``(uint8 image (C, H, W) for run, its test index when it is the run's own test image, description)``.

    ``data``: the upload's bytes (parsed once per grid); :class:`.uploads.UploadError` if they do not decode.
    """
    if source["kind"] == "upload":
        image = uploads.decode_image(data, run.meta)
        return image, None, f"{source['name']}, decoded for this run"
    origin, i = store.get(source["run"]), int(source["index"])
    true = origin.class_names[int(origin.labels[i])]
    if run.meta["dataset"]["fingerprint"] == origin.meta["dataset"]["fingerprint"]:
        mine = "" if run is origin else f" (its own copy; same test set as {source['run']})"
        return run.images[i], i, f"test image #{i}, true class {true}{mine}"
    return (converted(origin.images[i], run.meta), None,
            f"{source['run']}'s test image #{i} (true class {true}), prepared for this run")


# ---------------------------------------------------------------- one cell, one row, the grid

def attribution(run, image: np.ndarray, index: int | None, target: int, settings: Settings, cache) -> np.ndarray:
    """Map float32 ``(H, W)`` for ``target``: a run's own test image may come from its gradcam.npz."""
    from .explain import explain_image
    from .precompute import test_image_map

    if index is not None:
        return test_image_map(run, index, target, settings, cache)
    return explain_image(run, image, target, settings, cache)


def deletion_auc(run, image: np.ndarray, target: int, heat: np.ndarray, settings: Settings, cache=None) -> float:
    """Deletion AUC (RISE; lower is better) of ``heat`` ``(H, W)`` for ``target`` on uint8 ``image``
    ``(C, H, W)``, from :func:`.faithfulness.deletion_insertion` on :data:`AUC_STEPS` steps; cached
    as a float under the map's own cache key."""
    from . import explain, faithfulness

    key = json.dumps(["deletion_auc", AUC_STEPS, cache_key(run.meta, settings, target, image_digest(image))])
    hit = cache.get(key) if cache is not None else None
    if isinstance(hit, float):
        return hit
    x = explain.to_input(image, run.meta)[0]
    with run.lock:  # a forward pass another request's Captum hooks must not see
        model = explain.shared_model(run)
        deletion, _insertion = faithfulness.deletion_insertion(model, x, target, faithfulness.removal_ranks(heat),
                                                               AUC_STEPS)
    value = float(faithfulness.auc(deletion[0]))
    if cache is not None:
        cache.set(key, value)
    return value


def build_cell(run, image: np.ndarray, index: int | None, target: int, method: str, unavailable: dict,
               cache=None) -> Cell:
    """The map of ``method`` for ``target`` and its deletion AUC; a method the run's model does not
    support, or one that fails, gives a cell with the reason instead."""
    label = METHODS[method].label
    if method in unavailable:
        return Cell(method, error=f"{label} is not available for this run: {unavailable[method]}")
    try:
        settings = Settings(method).resolved(run.meta)
        heat = attribution(run, image, index, target, settings, cache)
        score = deletion_auc(run, image, target, heat, settings, cache)
    except (KeyError, ValueError) as e:  # ExplainError (registry limits, layers) is a ValueError
        return Cell(method, error=f"{label}: {e.args[0] if e.args else e}")
    except RuntimeError as e:  # torch refusing this model/method pair; the log keeps the traceback
        log.exception("%s on %s failed", method, run.name)
        return Cell(method, error=f"{label} failed on this run: {shown(e)}")
    return Cell(method, overlay_src=data_url(overlay_png(image, heat, 0.5, CELL_SIZE)), deletion_auc=score)


def build_row(store, source: dict, name: str, methods: list[str], data: bytes | None, cache=None) -> Row:
    """The row of run ``name`` (a store key): the image it sees, its prediction, one cell per method."""
    from . import explain

    run = store.get(name)
    try:
        image, index, description = image_for(store, source, run, data)
        probs = run.probs[index] if index is not None else explain.predict(run, image, cache)
        unavailable = explain.unavailable_methods(run)
    except (KeyError, ValueError) as e:  # UploadError is a ValueError
        return Row(name, error=str(e.args[0]) if e.args else str(e))
    pred = int(np.argmax(probs))
    cells = [build_cell(run, image, index, pred, m, unavailable, cache) for m in methods]
    failing = failing_methods(load_sanity(run.run.path, run.meta)[0])
    for cell in cells:
        cell.fails_sanity = badge_title(failing[cell.method]) if cell.method in failing else ""
    return Row(name, description=description, input_src=data_url(image_png(image, INPUT_SIZE)),
               shape=tuple(image.shape), predicted=run.class_names[pred], probability=float(probs[pred]), cells=cells)


def build_grid(store, source: dict, runs: list[str], methods: list[str], cache=None) -> Grid:
    """Rows for ``runs`` x columns for ``methods`` (capped at :data:`MAX_RUNS` x :data:`MAX_METHODS`)
    for a :func:`parse_source`-checked ``source``; an upload's bytes are parsed once, decoded per run."""
    runs, notes = chosen(runs, store.names, MAX_RUNS, "run")
    methods, method_notes = chosen(methods, list(METHODS), MAX_METHODS, "method")
    try:
        data = uploads.parse_data_url(source["contents"]) if source["kind"] == "upload" else None
    except uploads.UploadError as e:
        raise BadInput(f"{source['name']}: {e}") from None
    rows = [build_row(store, source, name, methods, data, cache) for name in runs]
    return Grid(methods, rows, notes + method_notes)
