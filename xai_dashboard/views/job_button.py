"""A button that starts a precompute job (:mod:`..jobs`) for the selected run, with its progress bar
and status polled while the job runs. Used by the explanations view (Grad-CAM maps, the
scoreboard), the stress test and the embedding map.
"""
from __future__ import annotations

from dash import Input, Output, ctx, dcc, html

from .. import inputs


def job_controls(label: str, button: str, prefix: str) -> html.Div:
    """The toolbar :func:`register_job_button` drives: the button, ``{prefix}-progress``, ``-status``, ``-poll``."""
    return html.Div(className="toolbar", children=[
        html.Button(label, id=button, n_clicks=0),
        html.Progress(id=f"{prefix}-progress", value="0", max="100", style={"width": "200px"}),
        html.Span(id=f"{prefix}-status", className="hint"),
        dcc.Interval(id=f"{prefix}-poll", interval=2000, disabled=True),
    ])


def job_view(status) -> tuple[bool, str, str, str, bool]:
    """A :class:`..jobs.JobStatus` (or None) -> (poll disabled, status text, progress value, progress max,
    button disabled): the page polls and the button waits only while the job is queued or running."""
    if status is None:
        return True, "", "0", "100", False
    active = status.state in ("queued", "running")
    text = {"queued": "starting…", "running": f"{status.done:,} / {status.total:,} maps",
            "done": status.message, "failed": f"failed: {status.message}", "busy": status.message}[status.state]
    return not active, text, str(status.done), str(max(status.total, 1)), active


def register_job_button(app, store, kind: str, button: str, prefix: str) -> None:
    """A button starting job ``kind`` (:mod:`..jobs`: one per run for the whole server, at most
    ``XAI_MAX_JOBS`` at once) for the selected run, with ``{prefix}-status``/``-progress`` polled
    through ``{prefix}-poll`` while it runs."""
    from .. import jobs

    @app.callback(Output(f"{prefix}-poll", "disabled"), Output(f"{prefix}-status", "children"),
                  Output(f"{prefix}-progress", "value"), Output(f"{prefix}-progress", "max"),
                  Output(button, "disabled"),
                  Input(button, "n_clicks"), Input(f"{prefix}-poll", "n_intervals"),
                  Input("run-select", "value"), prevent_initial_call=True)
    @inputs.guarded(inputs.constant(True), inputs.hint, inputs.constant("0"), inputs.constant("100"),
                    inputs.constant(True))
    def job(_clicks, _ticks, run_name):
        run = inputs.run_of(store, run_name)
        if ctx.triggered_id == button:
            return job_view(jobs.start(kind, run.run.path, store.data_dir))
        return job_view(jobs.read_status(kind, run.run.path))
