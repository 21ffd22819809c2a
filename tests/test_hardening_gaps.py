"""Items of the hardening issue (#15) that had no test through the route a user would take. On the
shipped digits demo, which needs no external data."""
from __future__ import annotations

from test_api import client, png_of, post  # noqa: F401 - client is a fixture


def test_occlusion_with_a_stride_over_its_window_is_a_400_in_words_from_the_api(client, demo_store):  # noqa: F811
    """Item 8: was a 500 from Captum's assertion; the API must refuse it before any work, naming both values."""
    image = png_of(demo_store.get(None).images[5])
    r = post(client, "/api/explain", image, method="occlusion", window="4", stride="8", format="json")
    assert r.status_code == 400 and r.is_json
    assert "stride 8 is larger than window 4" in r.get_json()["error"]
    ok = post(client, "/api/explain", image, method="occlusion", window="8", stride="4", format="json")
    assert ok.status_code == 200 and ok.is_json  # the same request within the limits is served
