"""The "nearest training examples" panel: the ``k`` training images closest to an image in the model's
embedding space (:mod:`..embedding_space`), with their labels and cosine distances.

Not a tab: other views place :func:`panel` where they show one image, and
:func:`register_callbacks` (called by the embedding map view, which owns the feature) fills each:

* ``detail-neighbours`` in the errors view's image detail, from ``selected-image``;
* ``xp-neighbours`` under the explanations view's prediction, from ``xp-image`` (a test image or an upload);
* ``emb-neighbours`` in the embedding map's detail, from ``emb-chosen``.
"""
from __future__ import annotations

from dash import Input, Output, html
from dash.exceptions import PreventUpdate

from .. import inputs
from ..images import image_url

SIZE = 64
HOW = ("cosine distance (0 = same direction) between penultimate-layer features; "
       "exact search over every training image")


def panel(panel_id: str) -> html.Div:
    """The empty panel a view places in its layout; filled by :func:`register_callbacks`."""
    return html.Div(id=panel_id, className="neighbours")


def neighbour_items(prefix: str, run, found) -> list[html.Div]:
    """One thumbnail per training image of ``found`` (:class:`..embedding_space.Neighbours`), captioned
    with its label and distance; ``data-index`` is the training-set index."""
    names = run.class_names
    items = []
    for i, label, d in zip(found.index.tolist(), found.label.tolist(), found.distance.tolist()):
        url = image_url(prefix, run.name, i, SIZE, found.fingerprint, split="train")
        items.append(html.Div(
            [html.Img(src=url, width=SIZE, height=SIZE, alt=f"training image {i}"),
             html.Div([html.Span(names[label], className="lbl-true"), html.Span(f"{d:.3f}", className="conf")],
                      className="caption")],
            className="gallery-item neighbour", title=f"training image #{i}: {names[label]}, distance {d:.4f}",
            **{"data-index": i}))
    return items


def block(prefix: str, run, *, test_index: int | None = None, image=None) -> list:
    """The panel's children for a test image or an uploaded uint8 ``image`` ``(C, H, W)``: a heading, the
    thumbnails, and a line on how they were found; a hint instead when the run has no embeddings."""
    from ..embedding_space import K_DEFAULT, neighbours_of

    found, note = neighbours_of(run, test_index=test_index, image=image, k=K_DEFAULT)
    head = html.H4("Nearest training examples")
    if found is None:
        return [head, html.P(note, className="hint")]
    return [head, html.Div(neighbour_items(prefix, run, found), className="gallery neighbours-gallery"),
            html.P(HOW, className="hint")]


def register_callbacks(app, store) -> None:
    prefix = app.config.requests_pathname_prefix

    @app.callback(Output("detail-neighbours", "children"), Input("selected-image", "data"))
    @inputs.guarded(inputs.hint)
    def detail(selected):
        chosen = inputs.selected_image(store, selected)
        return [] if chosen is None else block(prefix, chosen[0], test_index=chosen[1])

    @app.callback(Output("emb-neighbours", "children"), Input("emb-chosen", "data"))
    @inputs.guarded(inputs.hint)
    def map_detail(chosen):
        chosen = inputs.selected_image(store, chosen)
        return [] if chosen is None else block(prefix, chosen[0], test_index=chosen[1])

    @app.callback(Output("xp-neighbours", "children"), Input("xp-image", "data"), Input("view-tabs", "value"))
    @inputs.guarded(inputs.hint)
    def explained(source, tab):
        if tab != "explain":  # an upload is embedded by the model: only while its tab is shown
            raise PreventUpdate
        from .explain_model import source_image

        run, source = inputs.explained_image(store, source)
        _, image, index, _ = source_image(store, source)
        return block(prefix, run, test_index=index) if index is not None else block(prefix, run, image=image)
