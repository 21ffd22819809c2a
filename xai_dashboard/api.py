"""REST API on the Dash server: ``/api/runs``, ``/api/predict``, ``/api/explain``, ``/api/label-issues``,
``/api/robustness``.

Every answer under ``/api/`` is JSON (or a PNG overlay): errors are
``{"error": message}`` with 400 (bad input), 404 (unknown run, layer or
route), 405, 413 (too large), 415 (unsupported format) or 500 without a
traceback (the traceback goes to the server log only).

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

from urllib.parse import quote

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import uploads
from .cache import explain_cache
from .explain_spec import METHODS, ExplainError, Settings, parse_target
from .gradcam_file import load_precomputed
from .images import DETAIL_SIZE, clamp_size, shown
from .overlay import DEFAULT_COLORMAP, overlay_png

MULTIPART_SLACK = 64 * 1024
ENDPOINTS = {"runs": "GET", "predict": "POST", "explain": "POST", "label-issues": "GET", "robustness": "GET",
             "openapi.json": "GET"}
FORMATS = ("png", "json")


class ApiError(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def error(message: str, status: int) -> tuple[Response, int]:
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
    k = int(probs.argmax())
    return {"run": run.name, "label": run.class_names[k], "index": k, "confidence": float(probs[k]),
            "probabilities": {c: float(p) for c, p in zip(run.class_names, probs)}}


def _int_field(form, name: str, default: int) -> int:
    raw = form.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(f"field {name!r} must be an integer, got {raw!r}") from None


def _float_field(form, name: str, default: float, lo: float, hi: float) -> float:
    raw = form.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not lo <= value <= hi:
        raise ApiError(f"field {name!r} must be a number in [{lo}, {hi}], got {raw!r}")
    return value


def _flag_field(form, name: str) -> bool:
    raw = form.get(name) or "0"
    if raw not in ("0", "1"):
        raise ApiError(f"field {name!r} must be 0 or 1, got {raw!r}")
    return raw == "1"


def settings_from_form(form, meta: dict) -> Settings:
    """Form fields ``method``, ``layer`` and the chosen method's parameters, under their API names from
    the registry (:mod:`.methods`: ``steps`` for IG's ``ig_steps``) -> resolved Settings.
    Fields of other methods are ignored, as a page may send them all."""
    method = form.get("method") or Settings().method
    params = {p.name: _int_field(form, p.field, p.default) for p in getattr(METHODS.get(method), "params", ())}
    return Settings(method, form.get("layer") or None, **params).resolved(meta)


def register_api(server, store, *, max_upload_bytes: int | None = None, cache=None) -> None:
    """Add the ``/api`` routes and JSON error handlers to Flask ``server``, answering from RunStore ``store``.

    ``cache``: a diskcache.Cache for maps; default :func:`.cache.explain_cache`, opened
    on first use (so each gunicorn worker opens its own after the fork).
    """
    limit = max_upload_bytes or uploads.max_upload_bytes()
    server.config["MAX_CONTENT_LENGTH"] = max(server.config.get("MAX_CONTENT_LENGTH") or 0,
                                              limit * 4 // 3 + 2**20)
    bp = Blueprint("xai_api", __name__, url_prefix="/api")

    def maps_cache():
        return cache if cache is not None else explain_cache()

    def read_image(run):
        if "file" not in request.files:
            raise ApiError("missing multipart field 'file' (send the image as multipart/form-data)")
        data = request.files["file"].read(limit + 1)
        return uploads.decode_image(data, run.meta, max_bytes=limit)

    def get_run():
        """The run named by ``run``: a form field (POST) or a query parameter (GET); default the first loaded."""
        try:
            return store.get(request.form.get("run") or request.args.get("run") or None)
        except KeyError as e:
            raise ApiError(str(e.args[0]), 404) from None

    @bp.before_request
    def per_request_limit():
        request.max_content_length = limit + MULTIPART_SLACK

    @bp.get("/runs")
    def runs():
        return jsonify({"default": store.default, "runs": [run_summary(r) for r in store.runs.values()],
                        "skipped": store.skipped})

    @bp.post("/predict")
    def predict():
        from . import explain

        run = get_run()
        return jsonify(prediction_json(run, explain.predict(run, read_image(run), maps_cache())))

    @bp.post("/explain")
    def explain_route():
        from . import explain

        run = get_run()
        form = request.form
        fmt = (form.get("format") or "png").lower()
        if fmt not in FORMATS:
            raise ApiError(f"unknown format {shown(fmt)!r}; use png or json")
        settings = settings_from_form(form, run.meta)
        alpha = _float_field(form, "alpha", 0.5, 0.0, 1.0)
        spec, versus = form.get("target") or "pred", form.get("versus")
        scored = _flag_field(form, "faithfulness")
        if scored and (fmt != "json" or versus):
            raise ApiError("faithfulness=1 needs format=json and a single target class (no 'versus')")
        if scored:
            from .map_faithfulness import affordable_steps

            affordable_steps(run)  # over the budget even with coarse curves: 400 before any work
        image = read_image(run)
        if spec == "pred" and not versus:  # the common case: one pass gives prediction and map
            probs, heat = explain.explain_predicted(run, image, settings, maps_cache())
            pred = target = int(probs.argmax())
        else:
            probs = explain.predict(run, image, maps_cache())
            pred = int(probs.argmax())
            target = parse_target(spec, run.class_names, pred)
            if versus:
                other = parse_target(versus, run.class_names, pred)
                if other == target:
                    raise ApiError("'versus' must name a class other than the target")
                target = (target, other)
            heat = explain.explain_image(run, image, target, settings, maps_cache())
        names = run.class_names
        target_label = f"{names[target[0]]} − {names[target[1]]}" if isinstance(target, tuple) else names[target]
        if fmt == "png":
            size = clamp_size(form.get("size"), DETAIL_SIZE)
            png = overlay_png(image, heat, alpha, size, DEFAULT_COLORMAP)
            return Response(png, mimetype="image/png", headers={
                **label_headers("X-Prediction", names[pred]), **label_headers("X-Target", target_label),
                "X-Confidence": f"{probs[pred]:.6f}", "Cache-Control": "no-store"})
        body = {
            "run": run.name, "method": settings.method, "layer": settings.layer,
            "target": {"index": list(target) if isinstance(target, tuple) else target, "label": target_label},
            "prediction": prediction_json(run, probs), "shape": list(heat.shape), "heatmap": heat.tolist(),
        }
        if scored:
            from .map_faithfulness import api_block, map_faithfulness

            body["faithfulness"] = api_block(map_faithfulness(run, image, target, settings, heat, maps_cache()))
        return jsonify(body)

    @bp.get("/label-issues")
    def label_issues_route():
        """The test images cleanlab flags as probably mislabelled, most suspicious first (:mod:`.label_issues`)."""
        from .label_issues import API_DEFAULT_LIMIT, API_MAX_LIMIT, LabelIssuesError, issue_records

        run = get_run()
        limit = _int_field(request.args, "limit", API_DEFAULT_LIMIT)
        if not 1 <= limit <= API_MAX_LIMIT:
            raise ApiError(f"field 'limit' must be in [1, {API_MAX_LIMIT}], got {limit}")
        try:
            return jsonify(issue_records(run, limit))
        except LabelIssuesError as e:
            raise ApiError(str(e)) from None

    @bp.get("/robustness")
    def robustness():
        """Accuracy under every corruption x severity of the run's stress test (:mod:`.stress_file`)."""
        from .stress_file import robustness_json

        body, problem = robustness_json(get_run())
        if body is None:
            raise ApiError(problem, 404)
        return jsonify(body)

    @bp.get("/openapi.json")
    def openapi():
        from .openapi import openapi_document

        return jsonify(openapi_document(FORMATS))

    @bp.route("/", methods=["GET"])
    def index():
        return jsonify({"endpoints": {f"/api/{k}": m for k, m in ENDPOINTS.items()}})

    @bp.route("/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def unknown(rest: str):
        if rest.strip("/") in ENDPOINTS:
            return error(f"/api/{rest.strip('/')} accepts {ENDPOINTS[rest.strip('/')]} only", 405)
        return error(f"no such endpoint /api/{shown(rest)}; available: "
                     f"{', '.join('/api/' + k for k in ENDPOINTS)}", 404)

    @bp.errorhandler(ApiError)
    @bp.errorhandler(uploads.UploadError)
    @bp.errorhandler(ExplainError)
    def known_error(e):
        response, status = error(clip_echoes(str(e), [*request.form.values(), *request.args.values()]), e.status)
        if status == 503:  # busy decoder (a slot frees in seconds) or attribution queue (its estimated wait)
            response.headers["Retry-After"] = str(getattr(e, "retry_after", 5))
        return response, status

    @bp.errorhandler(HTTPException)
    def http_error(e: HTTPException):
        return error(e.description or e.name, e.code or 500)

    @bp.errorhandler(Exception)
    def internal_error(e: Exception):
        server.logger.exception("unhandled error in %s %s", request.method, request.path)
        return error("internal error; the server log has the details", 500)

    def too_large(_e: RequestEntityTooLarge):
        # App-wide: a too-large Dash callback body gets JSON too, never an HTML error page.
        return error(too_large_message(limit), 413)

    server.register_blueprint(bp)
    server.register_error_handler(RequestEntityTooLarge, too_large)
