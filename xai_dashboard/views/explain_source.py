"""Which image the explanations view explains: an upload, a test image by index, the image
selected in the gallery, or the same image of another run after a run switch. The choice lives in
``dcc.Store(id="xp-image")`` (its shape: :mod:`.explain_model`); uploads are checked twice, in the
browser (size, type: :data:`UPLOAD_GUARD_JS`) and on the server (:func:`.upload_to_source`).
"""
from __future__ import annotations

from dash import Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from .. import inputs, uploads
from .explain_controls import field
from .explain_model import source_for_run, upload_to_source

# dcc.Upload drops files over max_size or outside accept without telling the server, so this listener
# (attached once per upload area, on the document, so it works whenever the tab mounts) puts the same
# message in the area's error line that the server would have given. Its store: :func:`guard_stores`.
UPLOAD_GUARD_JS = """
function(guard) {
    const seen = window.__uploadGuards = window.__uploadGuards || {};
    if (!guard || seen[guard.upload]) { return window.dash_clientside.no_update; }
    seen[guard.upload] = true;
    const types = ["image/png", "image/jpeg", "image/webp"];
    const names = /\\.(png|jpe?g|webp)$/i;
    const check = (target, files) => {
        if (!target || !target.closest || !target.closest("#" + guard.upload) || !files || !files.length) { return; }
        const f = files[0];
        let msg = "";
        if (f.size > guard.limit) {
            msg = f.name + ": the file is " + (f.size / 1048576).toFixed(1) + " MB; the limit is "
                + (guard.limit / 1048576).toFixed(1) + " MB";
        } else if (!(types.includes(f.type) || names.test(f.name))) {
            msg = f.name + ": unsupported file type; upload a PNG, JPEG or WebP image";
        }
        if (msg) { window.dash_clientside.set_props(guard.error, {children: msg}); }
    };
    document.addEventListener("change", e => check(e.target, e.target && e.target.files), true);
    document.addEventListener("drop", e => check(e.target, e.dataTransfer && e.dataTransfer.files), true);
    return true;
}
"""


def guard_stores(prefix: str, upload: str, error: str, limit: int) -> list[dcc.Store]:
    """The stores of :data:`UPLOAD_GUARD_JS` for the dcc.Upload ``upload`` whose error line is ``error``
    (``limit``: bytes); :func:`register_guard` with the same ``prefix`` attaches it."""
    return [dcc.Store(id=f"{prefix}-upload-limit", data={"upload": upload, "error": error, "limit": limit}),
            dcc.Store(id=f"{prefix}-upload-guard")]


def register_guard(app, prefix: str) -> None:
    app.clientside_callback(UPLOAD_GUARD_JS, Output(f"{prefix}-upload-guard", "data"),
                            Input(f"{prefix}-upload-limit", "data"))


def stores(run_name: str, limit: int) -> list:
    """The chosen image (the run's first test image to begin with) and the upload guard's stores."""
    return [dcc.Store(id="xp-image", data={"kind": "test", "run": run_name, "index": 0}),
            *guard_stores("xp", "upload-image", "upload-error", limit)]


def pickers(limit: int) -> list:
    """The upload area, what it accepts, its error line and the test-index input (``limit``: bytes)."""
    return [
        dcc.Upload(id="upload-image", accept=uploads.ACCEPT, max_size=limit, multiple=False,
                   children=html.Div(["Drop an image here or ", html.A("choose a file")]),
                   style={"border": "2px dashed #c5cdd8", "borderRadius": "6px", "padding": "14px",
                          "textAlign": "center", "cursor": "pointer"}),
        html.P(f"PNG, JPEG or WebP, up to {limit // 2**20} MB; any size (resized and centre-cropped "
               "like the training images).", className="hint"),
        html.Div(id="upload-error", role="alert", style={"color": "#c0392b", "margin": "6px 0"}),
        field("…or test image #", dcc.Input(id="xp-test-index", type="number", min=0, step=1, value=0,
                                            debounce=True, style={"width": "100px"})),
    ]


def register_callbacks(app, store) -> None:
    register_guard(app, "xp")

    @app.callback(Output("xp-image", "data"), Output("upload-error", "children"), Output("xp-test-index", "value"),
                  Input("upload-image", "contents"), Input("selected-image", "data"), Input("xp-test-index", "value"),
                  Input("run-select", "value"), State("upload-image", "filename"), State("xp-image", "data"),
                  prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint, inputs.keep)
    def choose_source(contents, selected, index, run_name, filename, current):
        run = inputs.run_of(store, run_name)
        # Several inputs can fire in one round (a run switch also clears selected-image), so
        # look at all of them, not only ctx.triggered_id.
        fired = ctx.triggered_prop_ids
        if "upload-image.contents" in fired:
            source, message = upload_to_source(inputs.text(contents, "the uploaded file"),
                                               inputs.text(filename, "the file name"), run)
            # cleared, so that typing any test index (even the previous one) switches back
            return (source or no_update), message, (None if source else no_update)
        chosen = inputs.selected_image(store, selected) if "selected-image.data" in fired else None
        if chosen is not None and selected["run"] == run.name:
            return {"kind": "test", "run": run.name, "index": chosen[1]}, "", chosen[1]
        if "xp-test-index.value" in fired and index is not None:
            return source_for_run({"index": inputs.index(index, len(run.labels))}, run), "", no_update
        # a malformed stored image is replaced by the run's first test image (render says what was wrong)
        current = inputs.lenient(lambda v: inputs.explained_image(store, v)[1], current, None)
        if "run-select.value" in fired or (current or {}).get("run") != run.name:
            return source_for_run(current, run), no_update, no_update
        raise PreventUpdate
