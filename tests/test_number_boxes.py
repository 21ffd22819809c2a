"""A page's number box (dcc.Input type=number) sends None when it is empty or holds text or a value outside its
min/max (Dash's documented behaviour), so the message must say what the box needs, not quote "None"."""
from __future__ import annotations

import pytest

from xai_dashboard import inputs
from xai_dashboard.methods import all_params


def test_a_number_box_sending_nothing_is_asked_for_its_range():
    with pytest.raises(inputs.BadInput) as e:
        inputs.number(None, "the opacity", 0.0, 1.0)
    assert str(e.value) == "the opacity needs a number in [0, 1]: the box is empty or holds no number in that range"
    with pytest.raises(inputs.BadInput, match=r"must be a number in \[0, 1\], not 1\.5"):  # a value is still quoted
        inputs.number(1.5, "the opacity", 0.0, 1.0)


@pytest.mark.parametrize("param", list(all_params().values()), ids=lambda p: p.name)
def test_every_method_parameter_box_says_its_range_when_empty(param):
    said = param.error(None)
    assert f"[{param.lo}, {param.hi}]" in said and "None" not in said
    assert param.error(param.default) is None and str(param.hi + 1) in param.error(param.hi + 1)
