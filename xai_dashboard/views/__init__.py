"""Dashboard pages. Each module in :data:`VIEWS` provides ``TITLE``, ``layout(store)``
(a Dash component) and ``register_callbacks(app, store)``; ``app.create_app`` puts
each layout in a tab, in this order. Shared gallery components live here.
A callback that draws when its view's tab opens takes :func:`.opened.when_opened` of its view, never
the tab selector itself: a tab click then runs that view's callbacks alone.
"""
from __future__ import annotations

import numpy as np
from dash import html

from ..images import THUMB_SIZE, test_image_url

VIEWS = ("overview", "errors", "threshold", "compare", "explain", "sidebyside", "labels", "humans", "embedding_map", "stress")


def gallery_item(prefix: str, run, index: int, *, caption: list, wrong: bool, clickable: bool = True,
                 size: int = THUMB_SIZE, title: str = "", caption_class: str = "caption",
                 kind: str = "gallery-item") -> html.Div:
    """One thumbnail: ``class="gallery-item"`` and ``data-index`` = test-set index (tests rely on both).
    A clickable one has the id ``{"type": kind, "index": index}``: another view's gallery passes its own
    ``kind``, since two galleries in the page may show the same image."""
    url = test_image_url(prefix, run, index, size)
    # a clickable one is focusable: assets/browse.js moves between them with the arrow keys, Enter opens one
    extra = {"id": {"type": kind, "index": int(index)}, "n_clicks": 0, "tabIndex": 0, "role": "button"} \
        if clickable else {}
    return html.Div(
        [html.Img(src=url, width=size, height=size, alt=f"test image {index}"),
         html.Div(caption, className=caption_class)],
        className="gallery-item" + (" wrong" if wrong else " right") + (" clickable" if clickable else ""),
        title=title or f"test image #{index}", **extra, **{"data-index": int(index)},
    )


def prediction_items(prefix: str, run, indices: np.ndarray, *, clickable: bool = True,
                     labels: np.ndarray | None = None) -> list[html.Div]:
    """Thumbnails captioned with true label, predicted label and confidence, for ``indices`` ``(M,)``.
    ``labels`` ``(N,)``: the true labels to show (default the run's; the reviewed ones, see :mod:`..corrected`)."""
    names = run.class_names
    labels, preds, probs = run.labels if labels is None else labels, run.preds, run.probs
    items = []
    for i in np.asarray(indices).tolist():
        t, p = int(labels[i]), int(preds[i])
        caption = [
            html.Span(names[t], className="lbl-true", title="true label"),
            html.Span("→" if t != p else "✓", className="arrow"),
            html.Span(names[p], className="lbl-pred " + ("wrong" if t != p else "right"), title="predicted label"),
            html.Span(f"{probs[i, p]:.0%}", className="conf", title="confidence in the prediction"),
        ]
        items.append(gallery_item(prefix, run, i, caption=caption, wrong=t != p, clickable=clickable,
                                  title=f"#{i}: true {names[t]}, predicted {names[p]} ({probs[i, p]:.1%})"))
    return items
