"""``create_app``: one :class:`RunStore`, a global run selector, one tab per view.

The store is built once per process and only read afterwards; everything a
user changes lives in their page (component values and ``dcc.Store``), so any
number of gunicorn workers can serve any request.
"""
from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path

import dash
import flask
from dash import dcc, html
from dash.development.base_component import Component

from . import url_state, vendor
from .corrected import label_switch
from .images import register_image_route, shown
from .store import RunStore
from .views import VIEWS, opened

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parent / "assets"


def _optional_module(name: str):
    """Import ``xai_dashboard.<name>``; None only when that very module does not exist yet."""
    full = f"{__package__}.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as e:
        if e.name == full:
            log.info("%s not present; skipping it", full)
            return None
        raise


def banner(store: RunStore) -> html.Div:
    """The visible notice (``id="banner"``): why runs were refused or the demo opened instead.

    One short sentence per distinct problem, naming the runs it hit and the fix; each
    run's full reason (paths, field, exception) is folded underneath, so three runs
    refused for the same reason read as one line rather than three paragraphs.
    """
    if not store.banner:
        return html.Div(id="banner", className="banner hidden", hidden=True)
    lead = store.note if store.problems else store.note or store.banner
    lines = [html.P(lead, className="banner-text")] if lead else []
    for problem in store.problems:
        lines.append(html.Div(className="banner-problem", children=[
            html.Span(problem.sentence, className="banner-text"),
            html.Details([html.Summary("details"), html.Ul([html.Li([html.B(name), f": {reason}"])
                                                        for name, reason in zip(problem.runs, problem.details)])]),
        ]))
    return html.Div(id="banner", className="banner", role="alert", children=lines)


def header(store: RunStore) -> html.Header:
    return html.Header(className="header", children=[
        html.Div(className="brand", children=[html.H1("XAI dashboard"),
                                              html.Span("error analysis & explanations", className="subtitle")]),
        html.Label(className="run-picker", children=[
            html.Span("Run"),
            dcc.Dropdown(id="run-select", options=[{"label": n, "value": n} for n in store.names],
                         value=store.default, clearable=False, searchable=False),
        ]),
        label_switch(),  # original / reviewed labels for every metric (xai_dashboard.corrected)
    ])


def warm_up(store: RunStore) -> None:
    """Pay one-off costs before the first page asks: plotly's template and validators,
    and each run's summary (read from ``summary.json`` beside its predictions or the user
    cache, computed only if neither holds it; see :mod:`.summaries`).

    Meant for a background thread in a single-process server (the CLI); a gunicorn
    master must not run threads before forking, so workers warm up on first use.
    Views may add their own: a module in ``VIEWS`` with ``warm_up(store)`` is called too.
    """
    from . import figures, summaries

    try:
        figures.empty_figure("warm-up")
        for run in store.runs.values():
            summaries.summary_of(run)
        for name in VIEWS:
            module = _optional_module(f"views.{name}")
            if module is not None and hasattr(module, "warm_up"):
                module.warm_up(store)
    except Exception:  # a warm-up must never take the server down; the callbacks will report it
        log.exception("warm-up failed")


def add_security_headers(app: dash.Dash) -> None:
    """Send ``nosniff``, ``X-Frame-Options: DENY``, a referrer policy and a Content-Security-Policy
    on every response (pages, callbacks, /img, /api, assets).

    Scripts run only from this server and, inline, only Dash's own (its renderer start-up and
    clientside callbacks, allowed by hash: :meth:`dash.Dash.csp_hashes`, computed at the first
    response, once every callback is registered). Styles may be inline: Dash components and
    plotly set ``style`` attributes. Images may be ``data:`` URLs (overlays, uploads).
    """
    policy: list[str] = []

    def headers(response):
        if not policy:
            policy.append("; ".join([
                "default-src 'self'", "script-src 'self' " + " ".join(app.csp_hashes()),
                "style-src 'self' 'unsafe-inline'", "img-src 'self' data: blob:", "font-src 'self' data:",
                "connect-src 'self'", "object-src 'none'", "base-uri 'self'", "form-action 'self'",
                "frame-ancestors 'none'"]))
        response.headers.setdefault("Content-Security-Policy", policy[0])
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    app.server.after_request(headers)


def _is_entry(value) -> bool:
    return isinstance(value, dict) and isinstance(value.get("id"), (str, dict)) \
        and isinstance(value.get("property"), str)


def _holds(value, ids: list[str]) -> bool:
    """``value`` is a list of one ``{id, property[, value]}`` per id in ``ids``, a list of them for a wildcard id."""
    def fits(entry, id_: str) -> bool:
        wild = id_.startswith("{") and any(v in (["ALL"], ["ALLSMALLER"]) for v in json.loads(id_).values())
        return (isinstance(entry, list) and all(map(_is_entry, entry))) if wild else _is_entry(entry)
    return isinstance(value, list) and len(value) == len(ids) and all(map(fits, value, ids))


def callback_request_problem(body, callback_map: dict) -> str | None:
    """Why Dash could not dispatch a ``/_dash-update-component`` ``body`` (None if it can): it indexes into the
    body unchecked, so a missing ``output`` or ``inputs``, or fewer inputs than the callback has, fails inside
    its dispatch before any callback (and its :func:`.inputs.guarded`) runs."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    output = body.get("output")
    callback = callback_map.get(output) if isinstance(output, str) else None
    if callback is None or "callback" not in callback:  # none, or one that runs in the browser
        return f"unknown callback output {shown(repr(output))}"
    multi = output.startswith("..")
    outputs = [p.rsplit(".", 1)[0] for p in (output[2:-2].split("...") if multi else [output])]
    if not _holds(body.get("outputs") if multi else [body.get("outputs")], outputs):
        return f"outputs must list {len(outputs)} {{id, property}} for callback {output}"
    for part in ("inputs", "state"):
        ids = [spec["id"] for spec in callback[part]]
        if not _holds(body.get(part, []), ids):
            return f"{part} must list {len(ids)} {{id, property, value}} for callback {output}"
    changed = body.get("changedPropIds", [])
    if not (isinstance(changed, list) and all(isinstance(c, str) for c in changed)):
        return "changedPropIds must be a list of property ids"
    return None


def refuse_malformed_callbacks(app: dash.Dash) -> None:
    """Answer a callback request Dash cannot dispatch (:func:`callback_request_problem`, or a body that is not
    JSON) with 400 ``{"error": ...}`` instead of the 500 of a failure inside Dash; other errors stay 500s, logged."""
    path = app.config.routes_pathname_prefix + "_dash-update-component"

    def check():
        if flask.request.path != path or flask.request.method != "POST":
            return None
        problem = callback_request_problem(flask.request.get_json(silent=True), app.callback_map)
        if problem is None:
            return None
        log.warning("refused a callback request: %s", problem)
        return flask.jsonify({"error": problem}), 400

    app.server.before_request(check)


def components(tree):
    """Every Dash component in a layout tree (children only: the views put none in other properties)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (list, tuple)):
            stack.extend(node)
        elif isinstance(node, Component):
            yield node
            stack.append(getattr(node, "children", None))


def placeholder_figures(tree) -> None:
    """An axis-less placeholder in every ``dcc.Graph`` given no figure: until its callback answers, or
    when its request fails before :func:`.inputs.guarded` can say why, a chart shows no bare axes."""
    from .figures import placeholder

    for c in components(tree):
        if isinstance(c, dcc.Graph) and getattr(c, "figure", None) is None:
            c.figure = placeholder(380)


def hoist_stores(tree) -> list[dcc.Store]:
    """Take the ``dcc.Store`` components out of a view's layout ``tree``, for the page to hold outside the tabs.

    ``dcc.Tabs`` mounts only the shown tab's content, and a store mounting (each time its tab is shown) compares
    its data with its memory: a memory store's None becomes undefined, a change that fires every callback reading
    it, other views' too, for nothing, and a session store's data set while it was away gives way to what its
    storage held. Outside the tabs a store mounts once, with the page; its None data is left unset too (a
    callback reads None either way, and an unset store mounts without a change).
    """
    taken: list[dcc.Store] = []

    def keep(children):
        kept = []
        for child in children:
            if isinstance(child, dcc.Store):
                taken.append(child)
            else:
                kept.append(keep(child) if isinstance(child, (list, tuple)) else child)
        return kept

    for c in list(components(tree)):
        if isinstance(getattr(c, "children", None), (list, tuple)):
            c.children = keep(c.children)
    for s in taken:
        if getattr(s, "data", False) is None:
            del s.data
    return taken


def create_app(run_dirs=None, data_dir=None, *, store: RunStore | None = None) -> dash.Dash:
    """Build the Dash app for ``run_dirs`` (default: every run under ``checkpoints/``).

    ``store`` short-circuits loading (tests, the benchmark). The store is also
    at ``app.server.config["XAI_STORE"]`` for Flask routes.
    """
    store = store if store is not None else RunStore.from_dirs(run_dirs, data_dir)
    app = dash.Dash(__name__, title="XAI dashboard", assets_folder=str(ASSETS),
                    assets_ignore=vendor.assets_ignore(), suppress_callback_exceptions=True, update_title=None)
    app.server.config["XAI_STORE"] = store
    register_image_route(app.server, store, app.config.routes_pathname_prefix)

    tabs, stores = [], []
    for name in VIEWS:
        module = _optional_module(f"views.{name}")
        if module is None:
            continue
        body = module.layout(store)
        stores += hoist_stores(body)
        tabs.append(dcc.Tab(label=module.TITLE, value=name, className="tab", selected_className="tab--selected",
                            children=html.Div(body, className="tab-body")))
        module.register_callbacks(app, store)

    views = tuple(t.value for t in tabs)
    app.layout = html.Div(className="page", children=[
        header(store),
        banner(store),
        url_state.notice(),
        dcc.Tabs(id=opened.TABS, value=views[0] if views else None, children=tabs, className="tabs"),
        *opened.stores(views),  # a tab click fires only its view's callbacks (views.opened)
        *stores,
        url_state.location(),
    ])
    opened.register(app, views)
    placeholder_figures(app.layout)
    url_state.register(app, store, views,
                       {c.id for c in components(app.layout) if isinstance(getattr(c, "id", None), str)})

    api = _optional_module("api")
    if api is not None:
        api.register_api(app.server, store)
    refuse_malformed_callbacks(app)
    add_security_headers(app)
    return app
