"""The optional plotly.js strict bundle: which files Dash may serve, integrity, offline setup."""
from __future__ import annotations

import base64
import hashlib
import re

import pytest

from xai_dashboard import vendor


def test_only_the_matching_bundle_is_served():
    ignore = re.compile(vendor.assets_ignore("4.1.1"))
    assert ignore.search("plotly-strict-4.0.2.min.js") and ignore.search("plotly-strict-4.1.10.min.js")
    assert ignore.search("plotly-cartesian-4.1.1.min.js")  # an older setup's bundle, without scattergl
    assert not ignore.search("plotly-strict-4.1.1.min.js") and not ignore.search("style.css")
    assert vendor.bundle_path("4.1.1").name == "plotly-strict-4.1.1.min.js"


def test_integrity_is_checked():
    data = b"not really a tarball"
    good = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    vendor._check_integrity(data, good)
    with pytest.raises(ValueError, match="mismatch"):
        vendor._check_integrity(data + b"!", good)
    with pytest.raises(ValueError, match="algorithm"):
        vendor._check_integrity(data, "sha1-" + base64.b64encode(hashlib.sha1(data).digest()).decode())


def test_offline_setup_only_prints_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(vendor, "VENDOR", tmp_path / "vendor")
    # nothing listens on the discard port
    assert vendor.main(["--registry", "http://127.0.0.1:9", "--timeout", "5"]) == 0
    assert "full plotly.js" in capsys.readouterr().err
    assert not (tmp_path / "vendor").exists()
