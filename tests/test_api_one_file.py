"""``/api/predict`` and ``/api/explain`` take one image: a form with two ``file`` parts is refused (400),
not answered for whichever part the server happened to read."""
from __future__ import annotations

import io

import pytest
from test_api import client, png_of  # noqa: F401  (client is a fixture)


@pytest.mark.parametrize("route", ["/api/predict", "/api/explain"])
def test_two_files_are_refused(client, demo_store, route):  # noqa: F811
    run = demo_store.get(None)
    a, b = png_of(run.images[0]), png_of(run.images[1])
    form = {"file": [(io.BytesIO(a), "a.png"), (io.BytesIO(b), "b.png")], "format": "json"}
    r = client.post(route, data=form, content_type="multipart/form-data")
    assert r.status_code == 400 and "one image per request" in r.get_json()["error"]
    single = client.post(route, data={"file": (io.BytesIO(a), "a.png"), "format": "json"},
                         content_type="multipart/form-data")
    assert single.status_code == 200
