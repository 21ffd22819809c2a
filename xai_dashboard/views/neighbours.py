"""The "nearest training examples" panel: the ``k`` training images closest to an image in the model's
embedding space (:mod:`..embedding_space`), with their labels and cosine distances, and a CSV of them.

Not a tab: other views place :func:`panel` where they show one image, and
:func:`register_callbacks` (called by the embedding map view, which owns the feature) fills each from
the store named in :data:`SOURCES`:

* ``detail-neighbours`` in the errors view's image detail, from ``selected-image``;
* ``xp-neighbours`` under the explanations view's prediction, from ``xp-image`` (a test image or an upload);
* ``emb-neighbours`` in the embedding map's detail, from ``emb-chosen``.

Each panel's "Download CSV" (``<panel>-export``, drawn with the neighbours) writes ``<panel>-download``:
the image's leading columns of every export (:mod:`..export`; the label on the header's label set),
then each neighbour's rank, training index, label and distance.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from dash import Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from .. import corrected, export, inputs
from ..images import image_url, thumbnail_format
from .opened import when_opened

SIZE = 64
HOW = ("cosine distance (0 = same direction) between penultimate-layer features; "
       "exact search over every training image")
SOURCES = {"detail-neighbours": "selected-image", "xp-neighbours": "xp-image", "emb-neighbours": "emb-chosen"}


def panel(panel_id: str) -> html.Div:
    """The empty panel a view places in its layout, filled by :func:`register_callbacks`; beside it the
    CSV's download and a line for what stopped it."""
    return html.Div([html.Div(id=panel_id, className="neighbours"), html.Span(id=f"{panel_id}-export-note"),
                     dcc.Download(id=f"{panel_id}-download")])


def found_for(run, test_index: int | None = None, image=None):
    """``(Neighbours or None, why)``: what the panel shows for a test image or an uploaded uint8 ``image``
    ``(C, H, W)`` (:func:`..embedding_space.neighbours_of` at the panel's ``k``)."""
    from ..embedding_space import K_DEFAULT, neighbours_of

    return neighbours_of(run, test_index=test_index, image=image, k=K_DEFAULT)


def neighbour_items(prefix: str, run, found) -> list[html.Div]:
    """One thumbnail per training image of ``found`` (:class:`..embedding_space.Neighbours`), captioned
    with its label and distance; ``data-index`` is the training-set index."""
    names = run.class_names
    items = []
    for i, label, d in zip(found.index.tolist(), found.label.tolist(), found.distance.tolist()):
        url = image_url(prefix, run.name, i, SIZE, found.fingerprint, split="train", fmt=thumbnail_format(run))
        items.append(html.Div(
            [html.Img(src=url, width=SIZE, height=SIZE, alt=f"training image {i}"),
             html.Div([html.Span(names[label], className="lbl-true"), html.Span(f"{d:.3f}", className="conf")],
                      className="caption")],
            className="gallery-item neighbour", title=f"training image #{i}: {names[label]}, distance {d:.4f}",
            **{"data-index": i}))
    return items


def block(prefix: str, panel_id: str, run, test_index: int | None = None, image=None) -> list:
    """The children of panel ``panel_id`` for a test image or an uploaded uint8 ``image`` ``(C, H, W)``: a
    heading, the thumbnails, how they were found and the CSV button; a hint instead when the run has no
    embeddings."""
    found, note = found_for(run, test_index, image)
    head = html.H4("Nearest training examples")
    if found is None:
        return [head, html.P(note, className="hint")]
    return [head, html.Div(neighbour_items(prefix, run, found), className="gallery neighbours-gallery"),
            html.P(HOW, className="hint"),
            html.Button("Download CSV", id=f"{panel_id}-export", n_clicks=0, className="export",
                        title="these training images: indices, labels and distances, nearest first")]


def query(store, panel_id: str, value) -> tuple | None:
    """``(run, test index or None, uploaded uint8 image (C, H, W) or None, upload name)`` panel ``panel_id``
    shows the neighbours of, from the ``value`` of its :data:`SOURCES` store; None when none is chosen."""
    if SOURCES[panel_id] != "xp-image":
        chosen = inputs.selected_image(store, value)
        return None if chosen is None else (chosen[0], chosen[1], None, "")
    from .explain_model import source_image

    run, source = inputs.explained_image(store, value)
    _, image, index, _ = source_image(store, source)
    return run, index, None if index is not None else image, source.get("name", "")


def upload_frame(run, name: str, probs: np.ndarray) -> pd.DataFrame:
    """The leading export columns (:data:`.export.COLUMNS`) of upload ``name`` with the model's
    probabilities ``probs`` ``(classes,)``: no test index, label or p(true)."""
    pred = int(np.argmax(probs))
    return pd.DataFrame([{"index": "", "file": name, "label": "", "prediction": run.class_names[pred],
                          "confidence": float(probs[pred]), "p(true)": ""}], columns=export.COLUMNS)


def neighbours_frame(run, found, head: pd.DataFrame) -> pd.DataFrame:
    """The panel as CSV, one row per training image of ``found`` (``k`` rows, nearest first): the image's
    leading columns ``head`` (one row) on every row, then the neighbour's rank (1 = nearest), training-set
    index, label (as given: reviews are of test images) and cosine distance."""
    frame = head.iloc[np.zeros(len(found.index), dtype=np.int64)].reset_index(drop=True)
    frame["rank"] = np.arange(1, len(found.index) + 1)
    frame["train index"] = found.index
    frame["train label"] = np.asarray(run.class_names, dtype=object)[found.label]
    frame["distance"] = found.distance
    return frame


def csv_of(store, panel_id: str, value, label_set: str) -> tuple[pd.DataFrame, str, str]:
    """``(frame, file name, note)``: the CSV of panel ``panel_id`` for its store's ``value``, the test image's
    label on ``label_set`` (the note says when the reviewed labels could not be read)."""
    chosen = query(store, panel_id, value)
    if chosen is None:
        raise inputs.BadInput("choose an image first")
    run, index, image, name = chosen
    found, why = found_for(run, index, image)
    if found is None:
        raise inputs.BadInput(why)
    if index is None:  # the upload's prediction the explanations card shows, from the explain cache
        from ..cache import explain_cache
        from ..explain import predict

        head, stem, note = upload_frame(run, name, predict(run, image, explain_cache())), name, None
    else:
        p, note = corrected.predictions_for(run, label_set)
        head, stem = export.image_frame(run, [index], p.labels), f"test-{index}"
    return neighbours_frame(run, found, head), export.filename(run.name, "neighbours", stem), note or ""


def register_callbacks(app, store) -> None:
    prefix = app.config.requests_pathname_prefix

    def fill(panel_id: str, value) -> list:
        chosen = query(store, panel_id, value)
        return [] if chosen is None else block(prefix, panel_id, *chosen[:3])

    @app.callback(Output("detail-neighbours", "children"), Input("selected-image", "data"))
    @inputs.guarded(inputs.hint)
    def detail(selected):
        return fill("detail-neighbours", selected)

    @app.callback(Output("emb-neighbours", "children"), Input("emb-chosen", "data"))
    @inputs.guarded(inputs.hint)
    def map_detail(chosen):
        return fill("emb-neighbours", chosen)

    @app.callback(Output("xp-neighbours", "children"), Input("xp-image", "data"), *when_opened("explain"))
    @inputs.guarded(inputs.hint)
    def explained(source, _opened, tab):
        inputs.shown(tab, "explain")  # an upload is embedded by the model: only while its tab is shown
        return fill("xp-neighbours", source)

    for panel_id, source in SOURCES.items():
        _register_export(app, store, panel_id, source)


def _register_export(app, store, panel_id: str, source: str) -> None:
    @app.callback(Output(f"{panel_id}-download", "data"), Output(f"{panel_id}-export-note", "children"),
                  Input(f"{panel_id}-export", "n_clicks"), State(source, "data"), State(corrected.SWITCH, "value"),
                  prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export_neighbours(clicks, value, label_set):
        """The neighbours shown, as CSV: searched again (one matrix-vector product; an upload embedded again)."""
        if not clicks:  # the button drawn with the neighbours, not pressed
            raise PreventUpdate
        frame, name, note = csv_of(store, panel_id, value, inputs.label_set(label_set))
        return export.download(frame, name), note
