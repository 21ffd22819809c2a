"""Clicks on pattern-matched buttons, relayed to the server through a fixed-id ``dcc.Store``.

Why not ``Input({"type": ..., "x": ALL}, "n_clicks")`` in a server callback: Dash fires such a
callback again whenever matching buttons are added to the page (each with ``n_clicks`` 0), and its
renderer gives a newer invocation of a callback precedence over one still in flight, whose response
it then discards (dash-renderer ``requestedCallbacks``: duplicates in ``executing``/``watched`` are
removed). So the change that started the first invocation is lost whenever the buttons are redrawn
while it runs: the gallery opened by a tab click stays empty because the confusion matrix's pair
buttons appeared meanwhile, and the side-by-side source ignores a gallery selection because the
image detail's "Compare across runs" link appeared meanwhile; the second invocation sees only the
new buttons and answers "not a click". Whether it happens depends on which response comes back
first, so it came and went with the machine's load and with what earlier requests had cached.

:func:`relay` moves the pattern-matched input into the browser: a clientside callback writes
``{"id": button id, "n_clicks": n}`` into the store on a real click and leaves it unchanged when
buttons are merely drawn, so the server callback listening to the store is never fired by a redraw.
"""
from __future__ import annotations

from dash import Input, Output, dcc

from .. import inputs

RELAY_JS = """
function (clicks) {
    const dc = window.dash_clientside, trig = dc.callback_context.triggered || [];
    // One trigger with a click count is a click; several, or a zero, are buttons being drawn.
    if (trig.length !== 1 || !trig[0].value) { return dc.no_update; }
    const pid = trig[0].prop_id;
    return {id: JSON.parse(pid.slice(0, pid.lastIndexOf("."))), n_clicks: trig[0].value};
}
"""


def store(store_id: str) -> dcc.Store:
    """The store a :func:`relay` writes to; place it in the view's layout."""
    return dcc.Store(id=store_id, data=None)


def relay(app, pattern: dict, store_id: str) -> None:
    """Relay real clicks on the buttons matching ``pattern`` (an ``ALL`` id) into ``store_id``'s data."""
    app.clientside_callback(RELAY_JS, Output(store_id, "data"), Input(pattern, "n_clicks"), prevent_initial_call=True)


def clicked(data, button_type: str) -> dict | None:
    """The id (a dict) of the ``button_type`` button a relayed click ``data`` came from; None when
    ``data`` records no click. Anything else the page could send is refused (BadInput)."""
    if data is None:
        return None
    button = data.get("id") if isinstance(data, dict) else None
    clicks = data.get("n_clicks") if isinstance(data, dict) else None
    if not isinstance(button, dict) or button.get("type") != button_type or isinstance(clicks, bool) \
            or not isinstance(clicks, int):
        raise inputs.BadInput(f"not a click on a {button_type!r} button")
    return button if clicks > 0 else None
