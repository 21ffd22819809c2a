"""How a map is shown wherever an explanation appears (the Explanations card, the gallery's
detail): the overlay with its colour bar beside it and its caption in words, contrast tiles with a
bar under each, and the buttons that download the overlay (PNG) and the map itself (.npy).

The overlay is a PNG (:mod:`..overlay`); its colour bar is a small plotly figure
(:meth:`.explain_model.Shown.colorbar`): [0, 1] for a relative map, ``±max|a|`` centred on zero
for a signed one.
"""
from __future__ import annotations

from dash import dcc, html, no_update

from .. import inputs
from ..figures import placeholder
from ..images import DETAIL_SIZE
from .explain_model import CONTRAST_SIZE, Panel, Shown, export_files

IMG = {"imageRendering": "pixelated", "border": "1px solid #e4e7eb", "borderRadius": "4px"}
BAR = {"staticPlot": True}  # a colour bar: nothing to zoom, hover or download
BAR_WIDTH, BAR_HEIGHT = 96, 76  # px: a vertical bar beside an overlay, a horizontal one under a tile


def shown_map(img_id: str, scale_id: str, caption_id: str, alt: str, size: int = DETAIL_SIZE) -> html.Figure:
    """An overlay filled by a callback (``img_id``), its colour bar (``scale_id``) beside it and its
    caption (``caption_id``) under both."""
    return html.Figure(style={"margin": "4px 0"}, children=[
        html.Div(style={"display": "flex", "alignItems": "center", "gap": "6px"}, children=[
            html.Img(id=img_id, width=size, height=size, alt=alt, style=IMG),
            dcc.Graph(id=scale_id, config=BAR, figure=placeholder(size),
                      style={"width": f"{BAR_WIDTH}px", "height": f"{size}px"})]),
        html.Figcaption(id=caption_id, className="hint")])


def contrast_tile(tile: Shown) -> html.Figure:
    """A small overlay with its horizontal colour bar and caption."""
    return html.Figure(style={"margin": 0, "width": f"{CONTRAST_SIZE}px"}, children=[
        html.Img(src=tile.src, width=CONTRAST_SIZE, height=CONTRAST_SIZE, alt=tile.caption, style=IMG),
        dcc.Graph(figure=tile.colorbar(CONTRAST_SIZE, horizontal=True), config=BAR,
                  style={"height": f"{BAR_HEIGHT}px", "width": f"{CONTRAST_SIZE}px"}),
        html.Figcaption(tile.caption, className="hint")])


def export_buttons(prefix: str) -> html.Div:
    """Download the overlay shown (PNG) and its map (float32 .npy): buttons ``{prefix}-export-png`` and
    ``-npy``, into ``{prefix}-download``; ``{prefix}-export-note`` says what failed."""
    return html.Div(className="toolbar", children=[
        html.Button("Download overlay (PNG)", id=f"{prefix}-export-png", n_clicks=0),
        html.Button("Download map (.npy)", id=f"{prefix}-export-npy", n_clicks=0,
                    title="the map as float32 (H, W) at the network's input size: in [0, 1] relative, "
                          "or signed as computed"),
        dcc.Download(id=f"{prefix}-download"), html.Span(id=f"{prefix}-export-note")])


def download(panel: Panel, button: str | None) -> tuple[dict | object, object]:
    """``(dcc.Download data, note)`` for a click on ``button``: the overlay PNG for an ``…-png`` button,
    else the map as .npy; the panel's error in words instead of a file."""
    if panel.error:
        return no_update, inputs.hint(panel.error)
    suffix = ".png" if str(button).endswith("png") else ".npy"
    name, data = next((n, d) for n, d in export_files(panel).items() if n.endswith(suffix))
    return dcc.send_bytes(data, name), ""
