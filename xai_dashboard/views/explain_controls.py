"""The explanations view's controls: method, target class, Grad-CAM layer, heatmap opacity and one
number input per registered method parameter (ids ``xp-method``, ``xp-target``, ``xp-cam-layer``,
``xp-opacity``, ``xp-param-<name>``), their options for a run, and :func:`page_controls`, which checks
what they send. Controls the chosen method does not read are disabled, their tooltips saying why.
"""
from __future__ import annotations

from dash import Input, Output, dcc, html

from .. import explain_spec, inputs
from ..methods import METHODS, all_params
from .explain_model import Controls, ignored_because, method_options

PAGE_PARAMS = [p for p in all_params().values() if p.in_page]  # one input each, id "xp-param-<name>"


def field(label: str, component, width: str = "190px", **extra) -> html.Label:
    """``component`` under its ``label``; ``extra``: the label's own props (an ``id`` to set its tooltip)."""
    return html.Label([html.Span(label, className="hint", style={"display": "block"}), component],
                      style={"display": "inline-block", "width": width, "marginRight": "12px"}, **extra)


def method_parameters() -> html.Details:
    """One number input per registered parameter, with the registry's limits and default."""
    return html.Details([html.Summary("Method parameters", className="hint"), html.Div(className="toolbar", children=[
        field(p.label, dcc.Input(id=f"xp-param-{p.name}", type="number", min=p.lo, max=p.hi, step=1, value=p.default,
                                 debounce=True, style={"width": "90px"}), "130px", id=f"xp-param-{p.name}-field")
        for p in PAGE_PARAMS])])


def toolbar(run) -> html.Div:
    """Method, target class, Grad-CAM layer and opacity for ``run`` (a :class:`..store.LoadedRun`)."""
    return html.Div(className="toolbar", children=[
        field("Method", dcc.Dropdown(id="xp-method", value="gradcam", clearable=False, options=method_options())),
        field("Target class", dcc.Dropdown(id="xp-target", value="pred", clearable=False,
                                           options=target_options(run.class_names))),
        field("Grad-CAM layer", dcc.Dropdown(id="xp-cam-layer", clearable=False, options=cam_layer_options(run.meta),
                                             value=run.meta["gradcam_layer"]), "280px", id="xp-cam-layer-field"),
        field("Heatmap opacity", dcc.Slider(id="xp-opacity", min=0, max=1, step=0.05, value=0.5,
                                            marks={0: "0", 0.5: "0.5", 1: "1"}), "200px"),
    ])


def layer_options(meta: dict) -> list[dict]:
    return [{"label": f"{e['name']}  {tuple(e['shape'])}", "value": e["name"]} for e in meta["layers"]]


def cam_layer_options(meta: dict) -> list[dict]:
    """The layers Grad-CAM can use (spatial ones). Given in the layout too: a dropdown without options
    empties its value."""
    return [o for o in layer_options(meta) if o["value"] in explain_spec.spatial_layers(meta)]


def target_options(class_names: list[str]) -> list[dict]:
    return [{"label": "predicted class", "value": "pred"}, {"label": "true class", "value": "true"}] + [
        {"label": f"{i}: {n}", "value": str(i)} for i, n in enumerate(class_names)]


def page_controls(store, source, method, target, layer, values, opacity=None) -> tuple[dict, Controls]:
    """The explanations card's inputs, checked: ``(source, Controls)`` for :func:`.build_panel`; ``values``:
    the method parameters in :data:`PAGE_PARAMS` order; ``opacity`` None: the default (scores ignore it).
    The layer and the parameters are checked against the registry by build_panel (its ``error``)."""
    run, source = inputs.explained_image(store, source)
    method, target = inputs.one_of(method, METHODS, "method"), inputs.target(target, len(run.class_names))
    shown = {} if opacity is None else {"opacity": inputs.number(opacity, "the heatmap opacity", 0, 1)}
    return source, Controls(method, target, layer, params={p.name: v for p, v in zip(PAGE_PARAMS, values)}, **shown)


def register_callbacks(app, store) -> None:
    @app.callback(Output("xp-cam-layer", "disabled"), Output("xp-cam-layer-field", "title"),
                  *[o for p in PAGE_PARAMS for o in (Output(f"xp-param-{p.name}", "disabled"),
                                                     Output(f"xp-param-{p.name}-field", "title"))],
                  Output("xp-controls-note", "children"), Input("xp-method", "value"))
    @inputs.guarded(*[inputs.constant(False), inputs.constant("")] * (1 + len(PAGE_PARAMS)), inputs.hint)
    def ignored_controls(method):
        """Disable the controls the chosen method does not read; their tooltips say why."""
        why = ignored_because(inputs.one_of(method, METHODS, "method"))
        return (*[x for name in ["layer", *(p.name for p in PAGE_PARAMS)] for x in (name in why, why.get(name, ""))],
                "")
