"""Label issues page: the test images cleanlab flags as probably mislabelled, and their review.

Each flagged image shows its given label, cleanlab's suggested label and its label-quality
score (:mod:`xai_dashboard.label_issues`), with three review buttons; a review is saved at once
to the dataset's reviews file (:mod:`xai_dashboard.reviews`) and bumps the header's
``reviews-stamp``, so views showing the reviewed labels (:mod:`xai_dashboard.corrected`) redraw.
A thumbnail click opens the image in the errors view's detail panel (:func:`open_in_detail`).
The review buttons reach the server through a relay store (:mod:`.clicks`: a page of new buttons drawn
while a save runs must not cancel it); "Download CSV" exports every flagged image with its review.
"""
from __future__ import annotations

from dash import ALL, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from .. import analysis, corrected, export, inputs
from ..label_issues import LabelIssuesError, issues_table, rank_label_issues
from ..reviews import VERDICTS, ReviewsError, ReviewStore, counts
from . import clicks, gallery_item
from .opened import TABS, when_opened

TITLE = "Label issues"
TAB = __name__.rpartition(".")[2]
ITEM, REVIEW, CLASS = "lbl-item", "lbl-review", "lbl-class"  # pattern-matching id types
REVIEW_CLICK = "lbl-review-click"  # relay store of the review buttons' clicks
PAGE_SIZE = 24  # each item carries a class dropdown: fewer than the errors gallery's 48

# A click on a thumbnail (id type ITEM-like, value n_clicks) or on a point of a figure whose
# customdata is the test index (value clickData) -> the errors view's detail panel, opened.
_OPEN_JS = """
function (value, run) {
    const dc = window.dash_clientside, trig = dc.callback_context.triggered || [];
    if (trig.length !== 1 || !trig[0].value) { return [dc.no_update, dc.no_update]; }
    const pid = trig[0].prop_id, v = trig[0].value;
    let index;
    if (pid.endsWith(".clickData")) {
        const p = (v.points || [])[0];
        if (!p || typeof p.customdata !== "number") { return [dc.no_update, dc.no_update]; }
        index = p.customdata;
    } else {
        index = JSON.parse(pid.slice(0, pid.lastIndexOf("."))).index;
    }
    return [{run: run, index: index}, "errors"];
}
"""


def open_in_detail(app, source: Input) -> None:
    """Let ``source`` (thumbnails' ``n_clicks`` or a figure's ``clickData``) open an image in the errors
    view's detail panel: its ``selected-image`` is set and its tab shown, in the browser."""
    app.clientside_callback(_OPEN_JS, Output("selected-image", "data", allow_duplicate=True),
                            Output(TABS, "value", allow_duplicate=True), source,
                            State("run-select", "value"), prevent_initial_call=True)


def layout(store) -> html.Div:
    return html.Div(className="view labels-view", children=[
        dcc.Store(id="lbl-page", data=0),
        clicks.store(REVIEW_CLICK),
        html.Div(className="card", children=[
            html.Div(className="toolbar", children=[
                html.H3("Likely label errors"),
                html.Span([html.Span("0", id="lbl-count"), " flagged by cleanlab"], className="count"),
                dcc.Checklist(id="lbl-hide", value=[], inline=True, className="radio",
                              options=[{"label": "hide reviewed", "value": "hide"}]),
                html.Div(className="pager", children=[
                    html.Button("‹ Prev", id="lbl-prev", n_clicks=0),
                    html.Span(id="lbl-page-label", children="1 / 1"),
                    html.Button("Next ›", id="lbl-next", n_clicks=0),
                ]),
                html.Button("Download CSV", id="lbl-export", n_clicks=0, className="export",
                            title="every flagged image (every page, the reviewed filter applied), with its review"),
                html.Span(id="lbl-export-note"),
                dcc.Download(id="lbl-download"),
            ]),
            html.P("Most suspicious first. Flagged by cleanlab's confident learning on this run's test-set "
                   "probabilities; the score is cleanlab's label quality (the model's probability of the given "
                   "label: low = suspicious); the suggested label is the most probable other class. Click a "
                   "thumbnail for its detail.", className="hint"),
            html.Div(id="lbl-status"),
            html.Div(id="lbl-message", role="status"),
            html.Div(id="lbl-summary", className="lbl-summary"),
            html.Div(id="lbl-gallery", className="gallery review-gallery"),
        ]),
    ])


def review_item(prefix: str, run, row, review) -> html.Div:
    """One flagged image: thumbnail (given -> suggested, score) and its review controls and state."""
    names, i = run.class_names, int(row.index)
    given, suggested = int(row.given), int(row.suggested)
    caption = [html.Span(names[given], className="lbl-true", title="given label"),
               html.Span("→", className="arrow"),
               html.Span(names[suggested], className="lbl-pred", title="suggested label"),
               html.Span(f"{row.score:.3f}", className="conf", title="label quality (low = suspicious)")]
    thumb = gallery_item(prefix, run, i, caption=caption, wrong=True, kind=ITEM,
                         title=f"#{i}: given {names[given]}, suggested {names[suggested]}, quality {row.score:.4f}")
    corrected_to = review.label if review is not None and review.verdict == "wrong" else suggested
    state = "not reviewed" if review is None else VERDICTS[review.verdict] + (
        f" → {names[review.label]}" if review.verdict == "wrong" else "")
    return html.Div(className="review-item", **{"data-index": i}, children=[thumb, html.Div(
        className="review-controls", children=[
            html.Button("label is wrong →", id={"type": REVIEW, "verdict": "wrong", "index": i}, n_clicks=0),
            dcc.Dropdown(id={"type": CLASS, "index": i}, value=corrected_to, clearable=False, searchable=False,
                         options=[{"label": n, "value": c} for c, n in enumerate(names)], className="review-class"),
            html.Button("label is fine", id={"type": REVIEW, "verdict": "fine", "index": i}, n_clicks=0),
            html.Button("not sure", id={"type": REVIEW, "verdict": "unsure", "index": i}, n_clicks=0),
            html.Div(state, className="review-state" + ("" if review is None else f" {review.verdict}")),
        ])])


def summary_line(run, flagged: int, reviews: dict) -> str:
    """Review counts and the accuracy on the original and on the reviewed labels."""
    c = counts(reviews)
    preds = run.preds
    original = float((preds == run.labels).mean())
    reviewed = float((preds == corrected.effective_labels(run, reviews)).mean())
    return (f"{len(reviews):,} reviewed ({c['wrong']} wrong, {c['fine']} fine, {c['unsure']} not sure) of "
            f"{flagged:,} flagged. Accuracy on the original labels {original:.2%}, on the reviewed labels "
            f"{reviewed:.2%}.")


def register_callbacks(app, store) -> None:
    _register_gallery(app, store, app.config.requests_pathname_prefix)
    _register_review(app, store)
    _register_export(app, store)
    _register_label_note(app, store)
    open_in_detail(app, Input({"type": ITEM, "index": ALL}, "n_clicks"))


def _register_gallery(app, store, prefix: str) -> None:
    """The flagged images, a page at a time, each with its review buttons, and the review counts."""
    @app.callback(
        Output("lbl-gallery", "children"), Output("lbl-count", "children"), Output("lbl-page-label", "children"),
        Output("lbl-page", "data"), Output("lbl-status", "children"), Output("lbl-summary", "children"),
        Input("run-select", "value"), *when_opened(TAB), Input("lbl-prev", "n_clicks"),
        Input("lbl-next", "n_clicks"), Input("lbl-hide", "value"), Input(corrected.STAMP, "data"),
        State("lbl-page", "data"),
    )
    @inputs.guarded(inputs.hint, inputs.constant("0"), inputs.constant("1 / 1"), inputs.constant(0),
                    inputs.constant([]), inputs.constant(""))
    def update_gallery(run_name, _opened, tab, _prev, _next, hide, _stamp, page):
        inputs.shown(tab, TAB)
        run = inputs.run_of(store, run_name)
        hide = "hide" in inputs.checklist(hide, ("hide",), "the reviewed filter")
        page, trigger = inputs.page(page), ctx.triggered_id
        if trigger in ("run-select", "lbl-hide"):
            page = 0
        page = max(page - 1, 0) if trigger == "lbl-prev" else page + 1 if trigger == "lbl-next" else page
        try:
            frame = rank_label_issues(run)
        except LabelIssuesError as e:
            raise inputs.BadInput(str(e)) from None
        reviews_file = ReviewStore.for_run(run)
        status = [html.P(f"Reviews are saved in {reviews_file.path} and shared by every run on this dataset "
                         f"(fingerprint {reviews_file.fingerprint}).", className="hint")]
        try:
            reviews = reviews_file.load()
        except ReviewsError as e:
            reviews = {}
            status.append(html.P(f"{e}. The file is left as it is and no review can be saved; the original labels "
                                 f"are used.", className="hint input-error", role="alert"))
        flagged = len(frame)
        if hide:
            frame = frame[~frame["index"].isin(list(reviews))]
        rows = list(frame.itertuples(index=False))
        shown, page, pages = analysis.page_of(rows, page, PAGE_SIZE)
        items = [review_item(prefix, run, row, reviews.get(int(row.index))) for row in shown] or [
            html.P("No image left to review." if hide else "cleanlab flags no image of this run.", className="hint")]
        return items, f"{flagged:,}", f"{page + 1} / {pages}", page, status, summary_line(run, flagged, reviews)


def _register_review(app, store) -> None:
    """A review button's verdict saved to the dataset's reviews file; the header's stamp bumped."""
    clicks.relay(app, {"type": REVIEW, "verdict": ALL, "index": ALL}, REVIEW_CLICK)

    @app.callback(Output(corrected.STAMP, "data"), Output("lbl-message", "children"),
                  Input(REVIEW_CLICK, "data"), State({"type": CLASS, "index": ALL}, "value"),
                  State("run-select", "value"), State(corrected.STAMP, "data"), prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def save_review(click, _classes, run_name, stamp):
        button = clicks.clicked(click, REVIEW)
        if button is None:
            raise PreventUpdate
        run = inputs.run_of(store, run_name)
        verdict = inputs.one_of(button.get("verdict"), VERDICTS, "review")
        i = inputs.index(button.get("index"), len(run.labels))
        label = None
        if verdict == "wrong":
            chosen = [s.get("value") for s in ctx.states_list[0] if s["id"].get("index") == i]
            label = inputs.class_index(chosen[0] if chosen else None, len(run.class_names))
        try:
            ReviewStore.for_run(run).save(i, verdict, label)
        except ReviewsError as e:
            raise inputs.BadInput(f"Not saved: {e}") from None
        said = VERDICTS[verdict] + (f" → {run.class_names[label]}" if label is not None else "")
        stamp = stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else 0
        return stamp + 1, html.P(f"Saved: test image #{i}: {said}.", className="hint")


def _register_export(app, store) -> None:
    @app.callback(Output("lbl-download", "data"), Output("lbl-export-note", "children"),
                  Input("lbl-export", "n_clicks"), State("run-select", "value"), State("lbl-hide", "value"),
                  prevent_initial_call=True)
    @inputs.guarded(inputs.keep, inputs.hint)
    def export_issues(_clicks, run_name, hide):
        """Every flagged image in rank order (without the reviewed ones when they are hidden), as CSV."""
        run = inputs.run_of(store, run_name)
        hide = "hide" in inputs.checklist(hide, ("hide",), "the reviewed filter")
        try:
            reviews, note = ReviewStore.for_run(run).load(), ""
        except ReviewsError as e:  # as in the page: the original labels, and the reason in words
            reviews, note = {}, inputs.hint(f"Exported without reviews: {e}")
        try:
            frame = issues_table(run, reviews, hide)
        except LabelIssuesError as e:
            raise inputs.BadInput(str(e)) from None
        return export.download(frame, export.filename(run.name, "label-issues", "unreviewed" if hide else "all")), note


def _register_label_note(app, store) -> None:
    """The header's note beside the label-set switch: how many labels the reviews correct, or why none."""
    @app.callback(Output(corrected.NOTE, "children"), Input(corrected.SWITCH, "value"),
                  Input("run-select", "value"), Input(corrected.STAMP, "data"))
    @inputs.guarded(inputs.hint)
    def label_set_note(label_set, run_name, _stamp):
        label_set = inputs.label_set(label_set)
        run = inputs.run_of(store, run_name)
        p, note = corrected.predictions_for(run, label_set)
        if note:
            return html.Span(note, className="input-error", role="alert")
        changed = int((p.labels != run.labels).sum())
        return f"{changed:,} labels corrected by reviews" if label_set == "reviewed" else ""
