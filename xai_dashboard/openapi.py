"""The REST API described as an OpenAPI 3.0 document, served at ``/api/openapi.json``.

Built from the same lists the handlers validate against (the attribution-method
registry with its parameter limits, the output formats), so the description cannot drift from what the
server accepts; ``tests/test_api_fuzz.py`` fuzzes the running API against it
with schemathesis (no 5xx, every answer matches its declared schema).
"""
from __future__ import annotations

from typing import Sequence

from .label_issues import API_DEFAULT_LIMIT, API_MAX_LIMIT
from .methods import METHODS, all_params

_ERROR = {"type": "object", "required": ["error"], "additionalProperties": False,
          "properties": {"error": {"type": "string"}}}
_PREDICTION = {
    "type": "object", "required": ["run", "label", "index", "confidence", "probabilities"],
    "properties": {
        "run": {"type": "string"}, "label": {"type": "string"}, "index": {"type": "integer", "minimum": 0},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "probabilities": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}},
    },
}
_RUN = {
    "type": "object",
    "required": ["name", "arch", "num_classes", "class_names", "input_size", "in_channels", "methods"],
    "properties": {
        "name": {"type": "string"}, "arch": {"type": "string"}, "num_classes": {"type": "integer", "minimum": 2},
        "class_names": {"type": "array", "items": {"type": "string"}},
        "input_size": {"type": "integer", "minimum": 1}, "in_channels": {"type": "integer", "minimum": 1},
        "methods": {"type": "array", "items": {"type": "string"}},
    },
}
_LABEL_ISSUE = {
    "type": "object", "required": ["index", "given", "suggested", "score"], "additionalProperties": False,
    "properties": {"index": {"type": "integer", "minimum": 0, "description": "test-set position"},
                   "given": {"type": "string", "description": "the given label (class name)"},
                   "suggested": {"type": "string", "description": "the most probable other class"},
                   "score": {"type": "number", "minimum": 0, "maximum": 1,
                             "description": "cleanlab label quality: low = suspicious"}},
}
_ROBUSTNESS = {
    "type": "object", "required": ["run", "clean", "corruptions", "images", "complete"],
    "properties": {"run": {"type": "string"}, "clean": {"type": "number", "minimum": 0, "maximum": 1},
                   "corruptions": {"type": "object", "description": "accuracy at severity 1 .. 5, by snake-case "
                                   "name (gaussian_noise, jpeg_compression, ...)", "additionalProperties": {
                                       "type": "array", "minItems": 5, "maxItems": 5,
                                       "items": {"type": "number", "minimum": 0, "maximum": 1}}},
                   "images": {"type": "integer", "minimum": 1}, "complete": {"type": "boolean"}},
}
_FILE = {"type": "string", "format": "binary", "description": "a PNG, JPEG or WebP image"}
_RUN_NAME = {"type": "string", "description": "run name (default: the first loaded run)"}
_UNIT = {"type": "number", "minimum": 0, "maximum": 1}
_CURVE = {"type": "array", "items": _UNIT, "description": "target probability at 0, 1/steps, ... 100 % of pixels"}
_AUCS = {"deletion_auc": _UNIT, "insertion_auc": _UNIT, "deletion_curve": _CURVE, "insertion_curve": _CURVE}
_FAITHFULNESS = {
    "type": "object", "description": "present with faithfulness=1 (xai_dashboard.faithfulness)",
    "required": ["deletion_auc", "insertion_auc", "random", "edge", "road", "verdict"],
    "properties": {
        **_AUCS, "target": {"type": "integer", "minimum": 0}, "steps": {"type": "integer", "minimum": 1},
        "random": {"type": "object", "required": ["deletion_auc", "insertion_auc"],
                   "description": "random maps as smooth as the method's (mean and s.d. over seeds)",
                   "properties": {**_AUCS, "kind": {"type": "string"}, "seeds": {"type": "integer"},
                                  "deletion_auc_std": {"type": "number"}, "insertion_auc_std": {"type": "number"}}},
        "edge": {"type": "object", "required": ["deletion_auc", "insertion_auc"], "properties": _AUCS,
                 "description": "the Sobel edge map of the image"},
        "road": {"type": "object", "required": ["morf_mean", "lerf_mean", "gap"],
                 "properties": {"morf_mean": _UNIT, "lerf_mean": _UNIT, "gap": {"type": "number"},
                                "levels": {"type": "array", "items": _UNIT}}},
        "verdict": {"type": "object", "required": ["verdict", "reasons"], "properties": {
            "verdict": {"type": "string", "enum": ["faithful", "weak", "not better than random"]},
            "reasons": {"type": "array", "items": {"type": "string"}}}},
    },
}


def _errors(*codes: int) -> dict:
    """The error answers with status ``codes``: ``{"error": message}`` JSON, described in words."""
    words = {400: "bad input", 404: "unknown run, layer or class", 413: "upload too large",
             415: "not a PNG, JPEG or WebP image", 503: "server busy; retry later"}
    return {str(c): {"description": words[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _multipart(properties: dict) -> dict:
    """A required multipart/form-data request body with ``properties``, the ``file`` field required."""
    return {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"], "properties": properties}}}}


def method_fields() -> dict:
    """The attribution registry's method names and integer parameters (API field names, limits)."""
    fields = {"method": {"type": "string", "enum": list(METHODS), "default": "gradcam"}}
    for p in all_params().values():
        fields[p.field] = {"type": "integer", "minimum": p.lo, "maximum": p.hi, "default": p.default,
                           "description": p.label}
    return fields


def explain_operation(formats: Sequence[str]) -> dict:
    """``POST /api/explain``: its form (the registry's method fields included) and its answers; ``formats``
    are its output formats."""
    explain_fields = {
        "file": _FILE, "run": _RUN_NAME, **method_fields(),
        "target": {"type": "string", "description": "pred (default), a class name or a class index"},
        "versus": {"type": "string", "description": "second class: the map explains target minus versus, "
                                                    "signed (+ for target, - for versus; PNG: diverging scale)"},
        "layer": {"type": "string", "description": "a spatial layer for layer methods"},
        "alpha": {"type": "number", "minimum": 0, "maximum": 1},
        "size": {"type": "integer"},
        "format": {"type": "string", "enum": list(formats)},
        "faithfulness": {"type": "string", "enum": ["0", "1"], "default": "0",
                         "description": "1 (with format=json): also score the map's faithfulness"},
    }
    explain_json = {"type": "object", "required": ["run", "method", "target", "prediction", "shape", "heatmap"],
                    "properties": {"prediction": _PREDICTION,
                                   "shape": {"type": "array", "items": {"type": "integer"}},
                                   "signed": {"type": "boolean", "description": "true (with versus): heatmap "
                                              "keeps sign and magnitude; false: relative, in [0, 1]"},
                                   "heatmap": {"type": "array", "items": {"type": "array",
                                                                         "items": {"type": "number"}}},
                                   "faithfulness": _FAITHFULNESS}}
    return {
        "operationId": "explain", "summary": "an attribution map of one image",
        "requestBody": _multipart(explain_fields),
        "responses": {"200": {"description": "overlay PNG (format=png) or the map as JSON", "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": explain_json}}},
            **_errors(400, 404, 413, 415, 503)}}


def openapi_document(formats: Sequence[str]) -> dict:
    """The OpenAPI 3.0.3 document for ``/api``; ``formats`` are the explain route's output formats."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "xai-dashboard API", "version": "1",
                 "description": "Predictions and attribution maps for the loaded runs."},
        "paths": {
            "/api/runs": {"get": {"operationId": "runs", "summary": "the loaded runs", "responses": {
                "200": {"description": "loaded and skipped runs", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["default", "runs", "skipped"],
                    "properties": {"default": {"type": "string"}, "runs": {"type": "array", "items": _RUN},
                                   "skipped": {"type": "object", "additionalProperties": {"type": "string"}}},
                }}}}}}},
            "/api/label-issues": {"get": {
                "operationId": "labelIssues", "summary": "test images whose label is probably wrong (cleanlab)",
                "parameters": [{"name": "run", "in": "query", "schema": _RUN_NAME},
                               {"name": "limit", "in": "query", "schema": {
                                   "type": "integer", "minimum": 1, "maximum": API_MAX_LIMIT,
                                   "default": API_DEFAULT_LIMIT}}],
                "responses": {"200": {"description": "flagged images, most suspicious first", "content": {
                    "application/json": {"schema": {"type": "array", "items": _LABEL_ISSUE}}}},
                    **_errors(400, 404)}}},
            "/api/robustness": {"get": {
                "operationId": "robustness", "summary": "accuracy under common corruptions (the run's stress test)",
                "parameters": [{"name": "run", "in": "query", "schema": _RUN_NAME}],
                "responses": {"200": {"description": "clean accuracy and accuracy per corruption and severity",
                                      "content": {"application/json": {"schema": _ROBUSTNESS}}},
                              **_errors(404)}}},
            "/api/predict": {"post": {
                "operationId": "predict", "summary": "class probabilities of one image",
                "requestBody": _multipart({"file": _FILE, "run": _RUN_NAME}),
                "responses": {"200": {"description": "the prediction",
                                      "content": {"application/json": {"schema": _PREDICTION}}},
                              **_errors(400, 404, 413, 415, 503)}}},
            "/api/explain": {"post": explain_operation(formats)},
        },
    }
