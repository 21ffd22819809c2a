"""REST API on the Dash server: ``/api/runs``, ``/api/predict``, ``/api/explain``, ``/api/label-issues``,
``/api/robustness``.

Every answer under ``/api/`` is JSON (or a PNG overlay): errors are
``{"error": message}`` with 400 (bad input), 404 (unknown run, layer or
route), 405, 413 (too large), 415 (unsupported format) or 500 without a
traceback (the traceback goes to the server log only). Form fields and query parameters are
checked by :mod:`.api_form` before any work; the handlers are methods of :class:`Routes`.

Size limits: API requests may carry the upload limit plus a little multipart
overhead (set per request); ``MAX_CONTENT_LENGTH`` for the whole server is
larger because dcc.Upload posts the file base64-encoded inside the callback's
JSON, and an upload must reach the upload callback to get its own message.
Form fields other than the file are limited by Flask's ``MAX_FORM_MEMORY_SIZE``
(500 KB); a 413 names whichever limit applied.

Error messages quote what the client sent, shortened to 80 characters
(:func:`.images.shown`). Labels in response headers (``X-Prediction``,
``X-Target``) are printable ASCII with ``?`` for anything else; the exact
label is in ``X-Prediction*``/``X-Target*`` as an RFC 8187 ext-value
(``UTF-8''%E7%8C%AB``), since a header value is Latin-1 on the wire.

Handlers that run a model import :mod:`.explain` (torch, Captum) when first
called, so registering the API costs nothing at start-up.
"""
from __future__ import annotations

from typing import NamedTuple
from urllib.parse import quote

import numpy as np
from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import uploads
from .api_form import FORMATS, ApiError, ExplainAsk, explain_ask, int_field
from .api_form import settings_from_form  # noqa: F401  (re-exported: callers know it as api.settings_from_form)
from .cache import explain_cache
from .explain_spec import METHODS, ExplainError, Settings, parse_target
from .gradcam_file import load_precomputed
from .images import DETAIL_SIZE, clamp_size, shown
from .overlay import DEFAULT_COLORMAP, overlay_png

MULTIPART_SLACK = 64 * 1024
ENDPOINTS = {"runs": "GET", "predict": "POST", "explain": "POST", "label-issues": "GET", "robustness": "GET",
             "openapi.json": "GET"}


def error(message: str, status: int) -> tuple[Response, int]:
    """The API's error answer: ``{"error": message}`` with ``status``."""
    return jsonify({"error": message}), status


def label_headers(name: str, label: str) -> dict[str, str]:
    """``{name: printable-ASCII fallback, name + "*": RFC 8187 ext-value}`` for a label in a response header.

    WSGI headers are Latin-1: a class name such as 猫 hung werkzeug's dev server for 60 s and made
    gunicorn answer 500, and a newline would be a header injection. ``?`` stands in for anything else.
    """
    fallback = "".join(c if " " <= c <= "~" else "?" for c in label.replace("\u2212", "-"))
    return {name: fallback, f"{name}*": "UTF-8''" + quote(label, safe="")}


def clip_echoes(message: str, values) -> str:
    """``message`` with every over-long client ``values`` it repeats shortened (:func:`.images.shown`):
    the store and :mod:`.explain_spec` quote what they were given, a 60 KB run name included."""
    for value in set(values):
        if isinstance(value, str) and value != shown(value):
            message = message.replace(repr(value), repr(shown(value))).replace(value, shown(value))
    return message


def too_large_message(upload_limit: int) -> str:
    """Why werkzeug raised RequestEntityTooLarge for the current request, naming the limit that applied."""
    length, cap = request.content_length, request.max_content_length
    if length is not None and cap is not None and length > cap:
        what = f"the request is {length:,} bytes; this endpoint accepts {cap:,}"
        if request.path.startswith("/api/"):
            what += f" (uploads are limited to {upload_limit / 2**20:.0f} MB)"
    else:  # werkzeug's form parser: a text field over max_form_memory_size, or too many parts
        what = (f"a form field other than the file is over {request.max_form_memory_size:,} bytes, or the "
                f"form has more than {request.max_form_parts:,} parts")
    return f"request too large: {what}"


def run_summary(run) -> dict:
    """A LoadedRun as ``/api/runs`` lists it: architecture, classes, layers, data set, methods."""
    meta = run.meta
    return {
        "name": run.name, "arch": meta["arch"], "num_classes": meta["num_classes"],
        "class_names": run.class_names, "input_size": meta["input_size"], "in_channels": meta["in_channels"],
        "gradcam_layer": meta["gradcam_layer"], "layers": meta["layers"],
        "test_accuracy": meta.get("test_accuracy"), "weights_sha256": meta["weights_sha256"],
        "dataset": {k: meta["dataset"].get(k) for k in ("name", "num_test", "fingerprint")},
        "methods": list(METHODS), "precomputed_gradcam": load_precomputed(run) is not None,
    }


def prediction_json(run, probs) -> dict:
    """``/api/predict``'s answer for class probabilities ``probs`` ``(K,)`` of ``run``."""
    k = int(probs.argmax())
    return {"run": run.name, "label": run.class_names[k], "index": k, "confidence": float(probs[k]),
            "probabilities": {c: float(p) for c, p in zip(run.class_names, probs)}}


class Explained(NamedTuple):
    """One image's prediction and map: ``probs`` float32 ``(K,)``, ``heat`` float32 ``(H, W)``: in [0, 1],
    or for a difference map (``target`` a pair) signed, as the Explanations page draws it: sign and
    magnitude of logit[a] - logit[b]'s attribution, since rescaling into [0, 1] would lose "against"
    (a ReLU'd Grad-CAM of it is all zero wherever b wins) and set the zero point anywhere."""

    probs: np.ndarray
    heat: np.ndarray
    pred: int
    target: int | tuple[int, int]  # a class, or (class, versus class) for a difference map

    @property
    def signed(self) -> bool:
        return isinstance(self.target, tuple)


def explain_upload(run, image, ask: ExplainAsk, cache) -> Explained:
    """The map ``ask`` wants of uint8 ``image`` ``(C, H, W)``; ``cache`` a diskcache.Cache for maps."""
    from . import explain

    if ask.target == "pred" and not ask.versus:  # the common case: one pass gives prediction and map
        probs, heat = explain.explain_predicted(run, image, ask.settings, cache)
        pred = int(probs.argmax())
        return Explained(probs, heat, pred, pred)
    probs = explain.predict(run, image, cache)
    pred = int(probs.argmax())
    target = parse_target(ask.target, run.class_names, pred)
    if ask.versus:
        other = parse_target(ask.versus, run.class_names, pred)
        if other == target:
            raise ApiError("'versus' must name a class other than the target")
        target = (target, other)
    signed = isinstance(target, tuple)  # a difference map keeps its sign (see Explained)
    return Explained(probs, explain.explain_image(run, image, target, ask.settings, cache, signed), pred, target)


def target_label(names: list[str], target: int | tuple[int, int]) -> str:
    """A map's target in words: a class name, or ``"a − b"`` for a difference map."""
    return f"{names[target[0]]} − {names[target[1]]}" if isinstance(target, tuple) else names[target]


def overlay_response(run, image, got: Explained, alpha: float, size) -> Response:
    """The map over uint8 ``image`` ``(C, H, W)`` as a PNG of the form's ``size`` (clamped), a signed map on
    the page's diverging scale; the prediction, the target, the confidence and ``X-Signed`` in headers."""
    png = overlay_png(image, got.heat, alpha, clamp_size(size, DETAIL_SIZE), DEFAULT_COLORMAP, got.signed)
    names = run.class_names
    return Response(png, mimetype="image/png", headers={
        **label_headers("X-Prediction", names[got.pred]), **label_headers("X-Target", target_label(names, got.target)),
        "X-Confidence": f"{got.probs[got.pred]:.6f}", "X-Signed": str(int(got.signed)), "Cache-Control": "no-store"})


def explanation_json(run, got: Explained, settings: Settings) -> dict:
    """The format=json answer without its optional ``faithfulness`` block; ``heatmap`` is ``heat`` as lists,
    ``signed`` says whether it keeps its sign (a difference map) or is relative, in [0, 1]."""
    index = list(got.target) if isinstance(got.target, tuple) else got.target
    return {
        "run": run.name, "method": settings.method, "layer": settings.layer,
        "target": {"index": index, "label": target_label(run.class_names, got.target)},
        "prediction": prediction_json(run, got.probs), "shape": list(got.heat.shape), "signed": got.signed,
        "heatmap": got.heat.tolist(),
    }


class Routes:
    """The ``/api`` handlers over RunStore ``store``, added to a Blueprint by :func:`register_api`.

    ``limit``: the upload limit in bytes. ``cache``: a diskcache.Cache for maps; None means
    :func:`.cache.explain_cache`, opened on first use (so each gunicorn worker opens its own after the fork).
    """

    def __init__(self, store, limit: int, cache=None):
        self.store, self.limit, self.cache = store, limit, cache

    def maps_cache(self):
        """The cache for maps (see the class docstring)."""
        return self.cache if self.cache is not None else explain_cache()

    def read_image(self, run):
        """The multipart ``file`` as uint8 ``(C, H, W)`` for ``run``; no more than the limit + 1 bytes are read.
        Several ``file`` parts are refused rather than all but one ignored."""
        if "file" not in request.files:
            raise ApiError("missing multipart field 'file' (send the image as multipart/form-data)")
        if len(request.files.getlist("file")) > 1:
            raise ApiError(f"one image per request: the form has {len(request.files.getlist('file'))} "
                           f"'file' parts; send each image in a request of its own")
        data = request.files["file"].read(self.limit + 1)
        return uploads.decode_image(data, run.meta, max_bytes=self.limit)

    def get_run(self):
        """The run named by ``run``: a form field (POST) or a query parameter (GET); default the first loaded."""
        try:
            return self.store.get(request.form.get("run") or request.args.get("run") or None)
        except KeyError as e:
            raise ApiError(str(e.args[0]), 404) from None

    def per_request_limit(self):
        """Before every ``/api`` request: the body may be an upload plus multipart overhead."""
        request.max_content_length = self.limit + MULTIPART_SLACK

    def runs(self):
        """``GET /api/runs``: the loaded runs, the default one and the skipped ones with their reasons."""
        return jsonify({"default": self.store.default, "runs": [run_summary(r) for r in self.store.runs.values()],
                        "skipped": self.store.skipped})

    def predict(self):
        """``POST /api/predict``: class probabilities of the posted image."""
        from . import explain

        run = self.get_run()
        return jsonify(prediction_json(run, explain.predict(run, self.read_image(run), self.maps_cache())))

    def explain_route(self):
        """``POST /api/explain``: an attribution map of the posted image, as an overlay PNG or as JSON."""
        run = self.get_run()
        ask = explain_ask(request.form, run)
        image = self.read_image(run)
        got = explain_upload(run, image, ask, self.maps_cache())
        if ask.fmt == "png":
            return overlay_response(run, image, got, ask.alpha, request.form.get("size"))
        body = explanation_json(run, got, ask.settings)
        if ask.scored:
            from .map_faithfulness import api_block, map_faithfulness

            body["faithfulness"] = api_block(
                map_faithfulness(run, image, got.target, ask.settings, got.heat, self.maps_cache()))
        return jsonify(body)

    def label_issues_route(self):
        """The test images cleanlab flags as probably mislabelled, most suspicious first (:mod:`.label_issues`)."""
        from .label_issues import API_DEFAULT_LIMIT, API_MAX_LIMIT, LabelIssuesError, issue_records

        run = self.get_run()
        count = int_field(request.args, "limit", API_DEFAULT_LIMIT)
        if not 1 <= count <= API_MAX_LIMIT:
            raise ApiError(f"field 'limit' must be in [1, {API_MAX_LIMIT}], got {count}")
        try:
            return jsonify(issue_records(run, count))
        except LabelIssuesError as e:
            raise ApiError(str(e)) from None

    def robustness(self):
        """Accuracy under every corruption x severity of the run's stress test (:mod:`.stress_file`)."""
        from .stress_file import robustness_json

        body, problem = robustness_json(self.get_run())
        if body is None:
            raise ApiError(problem, 404)
        return jsonify(body)

    def openapi(self):
        """``GET /api/openapi.json``: the API's description (:mod:`.openapi`)."""
        from .openapi import openapi_document

        return jsonify(openapi_document(FORMATS))

    def index(self):
        """``GET /api/``: every endpoint with its HTTP method."""
        return jsonify({"endpoints": {f"/api/{k}": m for k, m in ENDPOINTS.items()}})

    def unknown(self, rest: str):
        """Any other path under ``/api/``: 405 for a known endpoint asked with the wrong method, else 404."""
        if rest.strip("/") in ENDPOINTS:
            return error(f"/api/{rest.strip('/')} accepts {ENDPOINTS[rest.strip('/')]} only", 405)
        return error(f"no such endpoint /api/{shown(rest)}; available: "
                     f"{', '.join('/api/' + k for k in ENDPOINTS)}", 404)

    def too_large(self, _e: RequestEntityTooLarge):
        """413 as JSON naming the limit that applied, app-wide: a too-large Dash callback body gets JSON
        too, never an HTML error page."""
        return error(too_large_message(self.limit), 413)


def known_error(e):
    """An ApiError, UploadError or ExplainError: its message (client values in it shortened) and status."""
    response, status = error(clip_echoes(str(e), [*request.form.values(), *request.args.values()]), e.status)
    if status == 503:  # busy decoder (a slot frees in seconds) or attribution queue (its estimated wait)
        response.headers["Retry-After"] = str(getattr(e, "retry_after", 5))
    return response, status


def http_error(e: HTTPException):
    """Werkzeug's HTTP errors (405, 413, ...) as JSON."""
    return error(e.description or e.name, e.code or 500)


def internal_error(e: Exception):
    """Anything else: 500 without a traceback; the traceback goes to the server log."""
    current_app.logger.exception("unhandled error in %s %s", request.method, request.path)
    return error("internal error; the server log has the details", 500)


def register_api(server, store, *, max_upload_bytes: int | None = None, cache=None) -> None:
    """Add the ``/api`` routes and JSON error handlers to Flask ``server``, answering from RunStore ``store``.

    ``cache``: a diskcache.Cache for maps; default :func:`.cache.explain_cache`, opened
    on first use (so each gunicorn worker opens its own after the fork).
    """
    limit = max_upload_bytes or uploads.max_upload_bytes()
    server.config["MAX_CONTENT_LENGTH"] = max(server.config.get("MAX_CONTENT_LENGTH") or 0,
                                              limit * 4 // 3 + 2**20)
    api = Routes(store, limit, cache)
    bp = Blueprint("xai_api", __name__, url_prefix="/api")
    bp.before_request(api.per_request_limit)
    bp.get("/runs")(api.runs)
    bp.post("/predict")(api.predict)
    bp.post("/explain")(api.explain_route)
    bp.get("/label-issues")(api.label_issues_route)
    bp.get("/robustness")(api.robustness)
    bp.get("/openapi.json")(api.openapi)
    bp.route("/", methods=["GET"])(api.index)
    bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])(api.unknown)
    for known in (ApiError, uploads.UploadError, ExplainError):
        bp.register_error_handler(known, known_error)
    bp.register_error_handler(HTTPException, http_error)
    bp.register_error_handler(Exception, internal_error)
    server.register_blueprint(bp)
    server.register_error_handler(RequestEntityTooLarge, api.too_large)
