"""The REST API fuzzed against its own OpenAPI document (schemathesis): no request, however
malformed, gets a 5xx, and every answer matches the status codes, content types and
schemas the document declares. Runs on the shipped digits demo (no external data)."""
from __future__ import annotations

import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance, not_a_server_error, response_headers_conformance, response_schema_conformance,
    status_code_conformance,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CHECKPOINTS
from xai_dashboard.app import create_app
from xai_dashboard.store import RunStore

OPERATIONS = ("GET /api/runs", "POST /api/predict", "POST /api/explain", "GET /api/label-issues",
              "GET /api/robustness")
# Not "positive data acceptance": a schema cannot say "a decodable PNG", so schema-valid bytes are
# rightly refused with 400/415; what must hold is no 5xx and answers matching the document.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("XAI_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield create_app(store=RunStore.from_dirs([CHECKPOINTS / "digits-demo"])).server
    mp.undo()


def test_openapi_document_is_served_and_lists_every_route(server):
    doc = server.test_client().get("/api/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    assert {f"{m.upper()} {p}" for p, ops in doc["paths"].items() for m in ops} == set(OPERATIONS)
    fields = doc["paths"]["/api/explain"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert fields["properties"]["steps"]["maximum"] == 256  # from the method registry


def _png(seed: int, size: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("operation", OPERATIONS)
def test_api_never_fails_and_matches_its_schema(server, operation):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", server)
    method, path = operation.split()
    op = next(r.ok() for r in schema.get_all_operations() if (r.ok().method.upper(), r.ok().path) == (method, path))
    images = [_png(i, size) for i, size in enumerate((8, 32, 77))]
    statuses: set[int] = set()

    def with_real_image(drawn):
        """Half the cases carry a decodable PNG, so the fuzzer reaches past the decoder."""
        case, image = drawn
        if image is not None and isinstance(case.body, dict):
            case.body["file"] = image
        return case

    # The pytest plugin's fixture mode does not work with this pytest; hypothesis drives the cases directly.
    @given(case=st.tuples(op.as_strategy(), st.none() | st.sampled_from(images)).map(with_real_image))
    @settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case):
        statuses.add(case.call_and_validate(checks=CHECKS).status_code)

    check()
    assert 200 in statuses, statuses  # the fuzzer also exercised the successful path
