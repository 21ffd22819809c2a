"""The stress view's second card, built from ``stress.npz`` (:mod:`..stress_file`) without callbacks (they are
in :mod:`.stress`): the heatmap cell a click or the page's store names, the images that cell breaks as clean |
corrupted pairs (the corrupted image regenerated for just the shown page), a pair's Grad-CAMs, and every
broken image of the cell as a CSV table.
"""
from __future__ import annotations

import numpy as np
from dash import html

from .. import analysis, export, inputs
from ..images import THUMB_SIZE, encode_png, test_image_url, to_hwc, upscale
from ..overlay import data_url
from ..stress_file import BROKEN_COLUMNS, SEVERITIES, broken, broken_rows, corrupted_test_images

PAIRS_PER_PAGE = 24
CAM_OPEN = "stress-cam-open"  # a pair's Grad-CAM button (pattern id; its clicks reach the server by a relay)
_IMG = {"imageRendering": "pixelated", "display": "inline-block", "margin": "0 3px 4px"}
_CAPTION = {"fontSize": "11px", "lineHeight": 1.4, "marginBottom": "4px"}
_SEVERITY_COLUMNS = [str(s) for s in SEVERITIES]  # the heatmap's x values; its last column, "mean", is no cell


def clicked_cell(click, corruptions: list[str]) -> dict | None:
    """A heatmap click (its point's ``y`` names the corruption, ``x`` the severity) -> ``{"corruption",
    "severity"}``; None for a mean cell; BadInput if malformed."""
    try:
        point = click["points"][0]
        name, column = point["y"], point["x"]
    except (TypeError, KeyError, IndexError):
        raise inputs.BadInput("the heatmap click carries no cell") from None
    if name == "mean" or column == "mean":
        return None
    column = inputs.one_of(str(column) if isinstance(column, int) else column, _SEVERITY_COLUMNS, "severity")
    return {"corruption": inputs.one_of(name, corruptions, "corruption"), "severity": int(column)}


def stored_cell(value, corruptions: list[str]) -> dict | None:
    """The cell kept in the page's ``stress-cell`` store (``{"corruption", "severity"}`` or None), checked
    as a click is."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise inputs.BadInput("the chosen cell is malformed")
    return clicked_cell({"points": [{"y": value.get("corruption"), "x": value.get("severity")}]}, corruptions)


def pair_item(run, data: dict, pos: int, corrupted: np.ndarray, c: int, s: int, prefix: str) -> html.Div:
    """One clean | corrupted pair: test image ``data["index"][pos]`` and its corrupted ``(C, H, W)``.
    Eight components: the page's cost in the browser grows with their number (Dash mounts each)."""
    names, i, t = run.class_names, int(data["index"][pos]), int(data["label"][pos])
    pc, pk = int(data["clean_pred"][pos]), int(data["pred"][c, s - 1, pos])
    src = data_url(encode_png(upscale(to_hwc(corrupted), THUMB_SIZE)))
    clean = test_image_url(prefix, run, i, THUMB_SIZE)

    def caption(what: str, pred: int, prob: float) -> list:
        return [f"{what} ", html.Span(names[pred], className="lbl-pred " + ("right" if pred == t else "wrong")),
                f" · p({names[t]}) {prob:.0%}"]

    return html.Div(className="gallery-item stress-pair", title=f"test image #{i}, true class {names[t]}",
                    **{"data-index": i, "data-label": t, "data-clean-pred": pc, "data-corrupted-pred": pk},
                    children=[
        *(html.Img(src=url, width=THUMB_SIZE, height=THUMB_SIZE, alt=f"{what} test image {i}", style=_IMG)
          for url, what in ((clean, "clean"), (src, "corrupted"))),
        html.Div(style=_CAPTION, title=f"prediction, and the probability of the true class {names[t]}", children=[
            *caption("clean", pc, float(data["clean_prob"][pos])), html.Br(),
            *caption("corrupted", pk, float(data["prob"][c, s - 1, pos]))]),
        html.Button("Grad-CAM of both", id={"type": CAM_OPEN, "index": i}, n_clicks=0)])


def pairs_page(run, data: dict, cell: dict, label: int | None, page: int, prefix: str) -> tuple[list, str, int, str]:
    """(pair items, title, page, "page / pages") of the images ``cell`` breaks, of true class ``label`` if given."""
    name, s = cell["corruption"], cell["severity"]
    hits = broken(data, name, s, label)
    shown, page, pages = analysis.page_of(hits, page, PAIRS_PER_PAGE)
    title = (f"{len(hits):,} images {name.replace('_', ' ')} at severity {s} breaks "
             "(right when clean, wrong when corrupted)")
    if not len(shown):
        return [html.P("None: every image right when clean stays right.", className="hint")], title, 0, "1 / 1"
    index = data["index"][shown]
    corrupted = corrupted_test_images(run.images[index], index, name, s, data["config"]["seed"])
    c = data["config"]["corruptions"].index(name)
    items = [pair_item(run, data, p, img, c, s, prefix) for p, img in zip(shown.tolist(), corrupted)]
    return items, title, page, f"{page + 1} / {pages}"


def pairs_frame(run, data: dict, cell: dict, label: int | None):
    """Every image ``cell`` breaks (of true class ``label`` if given), in the view's order, as a table:
    :func:`..stress_file.broken_rows` with the image's ``file`` after its index (image-folder runs)."""
    rows = broken_rows(data, cell["corruption"], cell["severity"], label, run.class_names)
    frame = export.table_frame(rows).reindex(columns=BROKEN_COLUMNS)  # the header even when nothing breaks
    files = export.file_paths(run)
    frame.insert(1, "file", [files[i] for i in frame["index"]] if files else [""] * len(frame))
    return frame


def gradcam_pair(run, index: int, corruption: str, severity: int, seed: int) -> list:
    """Grad-CAM overlays of test image ``index`` clean and corrupted, each for the class the model predicts."""
    from .. import explain
    from ..cache import explain_cache
    from ..explain_spec import Settings
    from ..overlay import overlay_png

    clean = np.asarray(run.images[index])
    corrupted = corrupted_test_images(clean[None], [index], corruption, severity, seed)[0]
    tiles = []
    for what, image in (("clean", clean), (f"{corruption.replace('_', ' ')}, severity {severity}", corrupted)):
        probs, heat = explain.explain_predicted(run, image, Settings("gradcam"), explain_cache())
        k = int(probs.argmax())
        tiles.append(html.Figure(style={"margin": "0 12px 8px 0"}, children=[
            html.Img(src=data_url(overlay_png(image, heat, 0.5, 160)), width=160, height=160, style=_IMG,
                     alt=f"Grad-CAM of the {what} image", className="stress-cam-overlay"),
            html.Figcaption(f"{what}: Grad-CAM for {run.class_names[k]} ({probs[k]:.0%})", className="hint")]))
    return [html.H4(f"Test image #{index}", style={"width": "100%", "margin": "0 0 6px"}), *tiles]
