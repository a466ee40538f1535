"""Interactive figures that need no kernel: HTML + a few lines of JavaScript with precomputed data.

An ipywidget needs a running Python kernel; in the static book it is blank or inert. The figures here
are computed once in Python, embedded in the notebook output as JSON, and only *switched* by the
browser: they work in the book, in Jupyter, in Colab and in a downloaded HTML page, on a phone too.

:func:`temperature_explorer` shows a teacher's soft targets :math:`p^t = \\mathrm{softmax}(z^t / T)`
for a few images, with a slider over the temperature :math:`T`.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
from typing import Optional, Sequence

import numpy as np
import torch

__all__ = ["HTMLFigure", "DEFAULT_TEMPERATURES", "bar_heights", "temperature_explorer"]

# Roughly log-spaced, and containing the temperatures the lessons talk about (1, 2, 4, 8, 20).
DEFAULT_TEMPERATURES = (0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5,
                        4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 70.0, 100.0)

# Geometry of the chart, in SVG user units; the SVG scales to the width of its container.
_WIDTH, _HEIGHT = 360, 190
_LEFT, _RIGHT, _TOP, _BOTTOM = 36, 6, 16, 34
_LOG_FLOOR = 1e-8  # the bottom of the log axis


class HTMLFigure:
    """Self-contained HTML (markup, style and script) that IPython displays as rich output."""

    def __init__(self, markup: str, description: str):
        self.markup = markup
        self.description = description

    def _repr_html_(self) -> str:
        return self.markup

    def __repr__(self) -> str:
        return f"<{self.description}: an HTML figure, shown by a notebook or the book>"


def bar_heights(probabilities: Sequence[float], log_scale: bool, plot_height: float = 1.0) -> list:
    """Height of each bar: ``p`` on a linear axis from 0 to 1, or ``log10 p`` on a log axis from 1e-8 to 1.

    The page's script applies the same formula when the reader moves the slider.
    """
    heights = []
    for p in probabilities:
        if log_scale:
            fraction = (math.log10(max(p, _LOG_FLOOR)) - math.log10(_LOG_FLOOR)) / -math.log10(_LOG_FLOOR)
        else:
            fraction = p
        heights.append(plot_height * min(max(fraction, 0.0), 1.0))
    return heights


def _as_tensor(value, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(value))
    except Exception as error:  # a ragged list, a string, ...
        raise ValueError(f"{name} must be a tensor or an array, got {type(value).__name__}") from error


def _png_data_uri(image: np.ndarray) -> str:
    from PIL import Image

    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    pixels = (255 * (1.0 - scaled)).round().astype(np.uint8)  # ink is dark, as in the notebook's figures
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _short(p: float) -> str:
    """A probability in at most 4 characters: 0.62, .05, 3e-5."""
    if p >= 0.995:
        return "1.0"
    if p >= 0.01:
        return f"{p:.2f}".lstrip("0")
    if p < 5e-10:
        return "0"
    mantissa, exponent = f"{p:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _validate(logits: torch.Tensor, labels: torch.Tensor, images: Optional[torch.Tensor],
              temperatures: Sequence[float], start_temperature: float, names: Optional[Sequence[str]]) -> None:
    if logits.dim() != 2 or not 1 <= logits.shape[0] <= 12 or not 2 <= logits.shape[1] <= 20:
        raise ValueError(f"logits must have shape [N, C] with 1 <= N <= 12 images and 2 <= C <= 20 classes, "
                         f"got shape {list(logits.shape)}")
    if not torch.isfinite(logits).all():
        raise ValueError("logits must be finite, got nan or inf")
    if labels.shape != (logits.shape[0],) or labels.dtype.is_floating_point:
        raise ValueError(f"labels must be {logits.shape[0]} integers (one per row of logits), "
                         f"got shape {list(labels.shape)} and dtype {labels.dtype}")
    if ((labels < 0) | (labels >= logits.shape[1])).any():
        raise ValueError(f"labels must lie in [0, {logits.shape[1] - 1}], got {labels.tolist()}")
    if images is not None and (images.shape[0] != logits.shape[0] or images.dim() not in (3, 4)
                               or (images.dim() == 4 and images.shape[1] != 1)):
        raise ValueError(f"images must have shape [N, H, W] or [N, 1, H, W] with N = {logits.shape[0]}, "
                         f"got shape {list(images.shape)}")
    if len(temperatures) < 2 or any(not (t > 0 and math.isfinite(t)) for t in temperatures) \
            or list(temperatures) != sorted(set(temperatures)):
        raise ValueError(f"temperatures must be at least two distinct, increasing, positive numbers, "
                         f"got {list(temperatures)}")
    if start_temperature not in temperatures:
        raise ValueError(f"start_temperature must be one of temperatures, got {start_temperature}")
    if names is not None and len(names) != logits.shape[0]:
        raise ValueError(f"names must hold one caption per image ({logits.shape[0]}), got {len(names)}")


_STYLE = """
#{id} {{ max-width: 100%; font-size: 14px; line-height: 1.4; margin: 0.5em 0; }}
#{id} .kdw-title {{ font-weight: 600; margin-bottom: 0.3em; }}
#{id} .kdw-pick {{ display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 0.4em; }}
#{id} .kdw-pick button {{ padding: 2px; border: 2px solid transparent; border-radius: 4px; background: #fff;
  cursor: pointer; line-height: 0; }}
#{id} .kdw-pick button[aria-pressed="true"] {{ border-color: #d62728; }}
#{id} .kdw-pick img {{ width: 36px; height: 36px; image-rendering: pixelated; }}
#{id} .kdw-pick .kdw-name {{ display: block; font-size: 11px; line-height: 1.2; color: #222; }}
#{id} .kdw-row {{ display: flex; align-items: center; gap: 8px; flex-wrap: wrap; }}
#{id} input[type=range] {{ flex: 1 1 160px; min-width: 120px; max-width: 100%; }}
#{id} output {{ font-variant-numeric: tabular-nums; min-width: 5.5em; font-weight: 600; }}
#{id} svg {{ width: 100%; max-width: 560px; height: auto; display: block; }}
#{id} .kdw-readout {{ font-size: 13px; }}
"""

_SCRIPT = """
(function () {
  var root = document.getElementById("%(id)s");
  if (!root || root.dataset.ready) { return; }
  root.dataset.ready = "1";
  var data = JSON.parse(root.querySelector("script.kdw-data").textContent);
  var slider = root.querySelector("input[type=range]"), shown = root.querySelector("output");
  var logBox = root.querySelector("input[type=checkbox]"), readout = root.querySelector(".kdw-readout");
  var bars = root.querySelectorAll("rect.kdw-bar"), values = root.querySelectorAll("text.kdw-value");
  var buttons = root.querySelectorAll(".kdw-pick button");
  var linTicks = root.querySelector("g.kdw-lin"), logTicks = root.querySelector("g.kdw-log");
  var image = data.start_image;
  function height(p, log) {
    var f = log ? (Math.log10(Math.max(p, data.floor)) - Math.log10(data.floor)) / -Math.log10(data.floor) : p;
    return data.plot_height * Math.min(Math.max(f, 0), 1);
  }
  function short(p) {
    if (p >= 0.995) { return "1.0"; }
    if (p >= 0.01) { return p.toFixed(2).replace(/^0/, ""); }
    if (p < 5e-10) { return "0"; }
    var e = Math.floor(Math.log10(p)), m = Math.round(p / Math.pow(10, e));
    if (m === 10) { m = 1; e += 1; }
    return m + "e" + e;
  }
  function draw() {
    var k = Number(slider.value), log = logBox.checked, p = data.probs[image][k];
    var label = data.labels[image], base = data.plot_top + data.plot_height;
    for (var c = 0; c < bars.length; c++) {
      var h = height(p[c], log);
      bars[c].setAttribute("y", (base - h).toFixed(2));
      bars[c].setAttribute("height", h.toFixed(2));
      bars[c].setAttribute("fill", c === label ? "#d62728" : "#1f77b4");
      values[c].setAttribute("y", (base - h - 2).toFixed(2));
      values[c].textContent = short(p[c]);
    }
    linTicks.style.display = log ? "none" : "";
    logTicks.style.display = log ? "" : "none";
    shown.textContent = "T = " + data.temperatures[k];
    slider.setAttribute("aria-valuetext", "temperature " + data.temperatures[k]);
    readout.textContent = data.readouts[image][k];
    for (var b = 0; b < buttons.length; b++) {
      buttons[b].setAttribute("aria-pressed", b === image ? "true" : "false");
    }
  }
  slider.addEventListener("input", draw);
  logBox.addEventListener("change", draw);
  for (var b = 0; b < buttons.length; b++) {
    buttons[b].addEventListener("click", (function (i) { return function () { image = i; draw(); }; })(b));
  }
  draw();
})();
"""


def _readout(p: torch.Tensor, label: int, temperature: float) -> str:
    classes = p.numel()
    entropy = float(-(p * p.clamp_min(1e-300).log()).sum())
    wrong = p.clone()
    wrong[label] = -1.0
    runner_up = int(wrong.argmax())
    return (f"entropy {entropy:.2f} nats ({100 * entropy / math.log(classes):.0f} % of uniform) · "
            f"true class {label}: {float(p[label]):.3g} · largest wrong class: {runner_up}")


def _axes_svg(classes: int, slot: float) -> str:
    base = _TOP + (_HEIGHT - _TOP - _BOTTOM)
    plot_height = _HEIGHT - _TOP - _BOTTOM
    parts = [f'<line x1="{_LEFT}" y1="{base}" x2="{_WIDTH - _RIGHT}" y2="{base}" stroke="currentColor" '
             f'stroke-width="0.8"/>']
    for c in range(classes):
        x = _LEFT + slot * (c + 0.5)
        parts.append(f'<text x="{x:.2f}" y="{base + 12}" text-anchor="middle" font-size="10" '
                     f'fill="currentColor">{c}</text>')
    parts.append(f'<text x="{_LEFT + (_WIDTH - _LEFT - _RIGHT) / 2:.2f}" y="{_HEIGHT - 6}" text-anchor="middle" '
                 f'font-size="10" fill="currentColor">class</text>')
    for group, ticks, log in (("kdw-lin", [(0.0, "0"), (0.5, "0.5"), (1.0, "1")], False),
                              ("kdw-log", [(1e-8, "1e-8"), (1e-4, "1e-4"), (1.0, "1")], True)):
        hidden = ' style="display:none"' if log else ""
        items = []
        for value, text in ticks:
            y = base - bar_heights([value], log, plot_height)[0]
            items.append(f'<line x1="{_LEFT - 3}" y1="{y:.2f}" x2="{_WIDTH - _RIGHT}" y2="{y:.2f}" '
                         f'stroke="currentColor" stroke-opacity="0.15"/>'
                         f'<text x="{_LEFT - 5}" y="{y + 3:.2f}" text-anchor="end" font-size="9" '
                         f'fill="currentColor">{text}</text>')
        parts.append(f'<g class="{group}"{hidden}>{"".join(items)}</g>')
    parts.append(f'<text x="10" y="{_TOP + plot_height / 2:.2f}" font-size="10" fill="currentColor" '
                 f'text-anchor="middle" transform="rotate(-90 10 {_TOP + plot_height / 2:.2f})">'
                 f'probability</text>')
    return "".join(parts)


def temperature_explorer(logits, labels, images=None, *, temperatures: Sequence[float] = DEFAULT_TEMPERATURES,
                         start_temperature: float = 1.0, names: Optional[Sequence[str]] = None,
                         title: str = "Soft targets p = softmax(z / T)") -> HTMLFigure:
    """A bar chart of ``softmax(logits[i] / T)`` with a temperature slider, an image picker and a log-axis box.

    Everything is computed here, in Python, for every image and every temperature of ``temperatures``;
    the page's script only switches between these precomputed states, so the figure works without a
    kernel (in the static book) and fits a 390 px phone screen.

    logits: ``[N, C]`` (at most 12 images, 20 classes); labels: ``[N]`` integers, the true classes (drawn
    red); images: optional ``[N, H, W]`` or ``[N, 1, H, W]`` thumbnails for the picker; names: optional
    captions, one per image.
    """
    logits = _as_tensor(logits, "logits").double()
    labels = _as_tensor(labels, "labels")
    images = None if images is None else _as_tensor(images, "images").double()
    temperatures = [float(t) for t in temperatures]
    _validate(logits, labels, images, temperatures, float(start_temperature), names)
    count, classes = logits.shape
    labels = labels.long()
    names = list(names) if names is not None else [f"#{i + 1}" for i in range(count)]

    probs = torch.stack([torch.softmax(logits / t, dim=-1) for t in temperatures], dim=1)  # [N, K, C]
    rounded = [[[float(f"{p:.4g}") for p in row.tolist()] for row in per_image] for per_image in probs]
    readouts = [[_readout(probs[i, k], int(labels[i]), temperatures[k]) for k in range(len(temperatures))]
                for i in range(count)]
    start = temperatures.index(float(start_temperature))

    plot_height = _HEIGHT - _TOP - _BOTTOM
    slot = (_WIDTH - _LEFT - _RIGHT) / classes
    payload = {"probs": rounded, "labels": labels.tolist(), "temperatures": [f"{t:g}" for t in temperatures],
               "readouts": readouts, "floor": _LOG_FLOOR, "plot_top": _TOP, "plot_height": plot_height,
               "start_image": 0}
    data_json = json.dumps(payload, separators=(",", ":"))
    uid = "kdw-" + hashlib.sha1((data_json + title + "".join(names)).encode()).hexdigest()[:10]

    # The first state is drawn here too, so the chart is not empty where scripts do not run.
    first = rounded[0][start]
    heights = bar_heights(first, False, plot_height)
    base = _TOP + plot_height
    bars = []
    for c in range(classes):
        x = _LEFT + slot * c + 0.15 * slot
        colour = "#d62728" if c == int(labels[0]) else "#1f77b4"
        bars.append(f'<rect class="kdw-bar" x="{x:.2f}" y="{base - heights[c]:.2f}" width="{0.7 * slot:.2f}" '
                    f'height="{heights[c]:.2f}" fill="{colour}"/>'
                    f'<text class="kdw-value" x="{x + 0.35 * slot:.2f}" y="{base - heights[c] - 2:.2f}" '
                    f'text-anchor="middle" font-size="8.5" fill="currentColor">{_short(first[c])}</text>')
    svg = (f'<svg viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="bar chart of the soft targets">'
           f'{_axes_svg(classes, slot)}{"".join(bars)}</svg>')

    picker = []
    if images is not None or count > 1:
        for i in range(count):
            alt = html.escape(f"image {names[i]}, true class {int(labels[i])}")
            thumb = (f'<img alt="{alt}" src="{_png_data_uri(images[i].reshape(images.shape[-2:]).numpy())}">'
                     if images is not None else "")
            picker.append(f'<button type="button" aria-pressed="{"true" if i == 0 else "false"}" '
                          f'aria-label="image {html.escape(names[i])}, true class {int(labels[i])}">{thumb}'
                          f'<span class="kdw-name">{html.escape(names[i])}</span></button>')
    markup = (
        f'<div id="{uid}" class="kdw-temperature">'
        f'<style>{_STYLE.format(id=uid)}</style>'
        f'<div class="kdw-title">{html.escape(title)}</div>'
        + (f'<div class="kdw-pick">{"".join(picker)}</div>' if picker else "")
        + f'<div class="kdw-row"><label for="{uid}-t">temperature</label>'
        f'<input id="{uid}-t" type="range" min="0" max="{len(temperatures) - 1}" step="1" value="{start}">'
        f'<output for="{uid}-t">T = {temperatures[start]:g}</output></div>'
        f'<div class="kdw-row"><label><input type="checkbox"> log-scale probability axis</label></div>'
        f'{svg}'
        f'<div class="kdw-readout">{html.escape(readouts[0][start])}</div>'
        f'<script type="application/json" class="kdw-data">{data_json}</script>'
        f'<script>{_SCRIPT % {"id": uid}}</script>'
        f'</div>')
    return HTMLFigure(markup, f"temperature explorer of {count} image(s) at {len(temperatures)} temperatures")
