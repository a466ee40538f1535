"""The kernel-free temperature explorer: its embedded data, its first drawn state, bad input, and (where a
headless Chromium is installed) its script in a real browser."""
import json
import math
import re
import shutil
import subprocess

import pytest
import torch

from kdtools.widgets import DEFAULT_TEMPERATURES, bar_heights, temperature_explorer

LOGITS = torch.tensor([[8.0, 1.0, -2.0, 0.5], [0.0, 3.0, 2.5, -1.0]])
LABELS = torch.tensor([0, 2])


def _payload(markup):
    return json.loads(re.search(r'<script type="application/json" class="kdw-data">(.*?)</script>', markup).group(1))


def test_bar_heights_on_both_axes_by_hand():
    assert bar_heights([0.0, 0.3, 1.0], log_scale=False, plot_height=100) == [0.0, 30.0, 100.0]
    # the log axis runs from 1e-8 (height 0) to 1 (full height): 1e-4 is half way, 1e-10 is clipped to 0
    assert bar_heights([1e-4, 1e-10, 1.0], log_scale=True, plot_height=100) == pytest.approx([50.0, 0.0, 100.0])


def test_embedded_probabilities_are_the_tempered_softmax_at_every_temperature():
    markup = temperature_explorer(LOGITS, LABELS)._repr_html_()
    data = _payload(markup)
    assert data["temperatures"] == [f"{t:g}" for t in DEFAULT_TEMPERATURES]
    assert data["labels"] == [0, 2]
    probs = torch.tensor(data["probs"], dtype=torch.float64)  # [N, K, C]
    for k, t in enumerate(DEFAULT_TEMPERATURES):
        expected = torch.softmax(LOGITS.double() / t, dim=-1)
        assert torch.allclose(probs[:, k], expected, rtol=1e-3, atol=1e-12)
    # T = 1 by hand for the first image: exp(z - 8) / sum
    by_hand = [math.exp(z - 8.0) for z in (8.0, 1.0, -2.0, 0.5)]
    assert probs[0, DEFAULT_TEMPERATURES.index(1.0), 0].item() == pytest.approx(1 / sum(by_hand), rel=1e-3)


def test_readout_states_the_entropy_and_the_true_class():
    data = _payload(temperature_explorer(LOGITS, LABELS)._repr_html_())
    k = DEFAULT_TEMPERATURES.index(100.0)
    p = torch.softmax(LOGITS[1].double() / 100.0, dim=-1)
    entropy = float(-(p * p.log()).sum())
    assert data["readouts"][1][k].startswith(f"entropy {entropy:.2f} nats")
    assert f"true class 2: {float(p[2]):.3g}" in data["readouts"][1][k]


def test_first_state_is_drawn_without_javascript():
    markup = temperature_explorer(LOGITS, LABELS, start_temperature=2.0)._repr_html_()
    heights = [float(h) for h in re.findall(r'<rect class="kdw-bar"[^>]*height="([0-9.]+)"', markup)]
    expected = bar_heights(torch.softmax(LOGITS[0] / 2.0, dim=-1).tolist(), False, 190 - 16 - 34)
    assert heights == pytest.approx(expected, abs=0.02)
    assert f'value="{DEFAULT_TEMPERATURES.index(2.0)}"' in markup and "T = 2</output>" in markup


def test_fits_a_phone_and_is_deterministic():
    first = temperature_explorer(LOGITS, LABELS, torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    again = temperature_explorer(LOGITS, LABELS, torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0)))
    markup = first._repr_html_()
    assert markup == again._repr_html_()  # re-running a notebook does not change its output
    assert 'viewBox="0 0 360 190"' in markup and "width: 100%" in markup
    assert markup.count("<img ") == 2 and "<script src" not in markup  # nothing is loaded from elsewhere
    assert "HTML figure" in repr(first)


@pytest.mark.parametrize("kwargs, message", [
    (dict(logits=torch.zeros(3), labels=torch.tensor([0])), "logits must have shape [N, C]"),
    (dict(logits=torch.zeros(2, 4), labels=torch.tensor([0])), "labels must be 2 integers"),
    (dict(logits=torch.zeros(2, 4), labels=torch.tensor([0.0, 1.0])), "labels must be 2 integers"),
    (dict(logits=torch.zeros(2, 4), labels=torch.tensor([0, 4])), "labels must lie in [0, 3]"),
    (dict(logits=torch.tensor([[0.0, float("nan")]]), labels=torch.tensor([0])), "logits must be finite"),
    (dict(logits=torch.zeros(2, 4), labels=torch.tensor([0, 1]), images=torch.zeros(3, 28, 28)),
     "images must have shape [N, H, W] or [N, 1, H, W] with N = 2"),
    (dict(logits=torch.zeros(2, 4), labels=torch.tensor([0, 1]), temperatures=(2.0, 1.0)),
     "temperatures must be at least two distinct, increasing"),
    (dict(logits=torch.zeros(2, 4), labels=torch.tensor([0, 1]), start_temperature=3.3),
     "start_temperature must be one of temperatures"),
    (dict(logits=torch.zeros(2, 4), labels=torch.tensor([0, 1]), names=["a"]), "names must hold one caption"),
])
def test_bad_input_names_the_argument(kwargs, message):
    with pytest.raises(ValueError) as error:
        temperature_explorer(**kwargs)
    assert message in str(error.value)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs a headless Chromium")
def test_slider_image_and_log_box_redraw_in_a_browser(tmp_path):
    widget = temperature_explorer(LOGITS, LABELS, names=["a", "b"])
    k = DEFAULT_TEMPERATURES.index(20.0)
    driver = (f'<script>var r = document.querySelector(".kdw-temperature");'
              f'var s = r.querySelector("input[type=range]"); s.value = {k}; s.dispatchEvent(new Event("input"));'
              f'r.querySelectorAll(".kdw-pick button")[1].click();'
              f'var b = r.querySelector("input[type=checkbox]"); b.checked = true;'
              f'b.dispatchEvent(new Event("change"));</script>')
    page = tmp_path / "page.html"
    page.write_text(f"<!doctype html><html><body>{widget._repr_html_()}{driver}</body></html>")
    dom = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    assert 'data-ready="1"' in dom and "T = 20</output>" in dom
    p = torch.softmax(LOGITS[1].double() / 20.0, dim=-1)
    assert f"true class 2: {float(p[2]):.3g}" in dom  # the second image's readout
    heights = [float(h) for h in re.findall(r'<rect class="kdw-bar"[^>]*height="([0-9.]+)"', dom)]
    assert heights == pytest.approx(bar_heights(p.tolist(), True, 190 - 16 - 34), abs=0.02)
