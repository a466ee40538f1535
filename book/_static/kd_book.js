// KD Companion: printed tables (aligned columns) keep their alignment on a phone and scroll inside their
// own box there; every other output wraps (book/_static/kd_book.css). Loaded by book/_ext/kd_book.py.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("div.cell_output pre").forEach(function (pre) {
    var lines = pre.textContent.split("\n").filter(function (line) { return line.trim(); });
    var aligned = lines.filter(function (line) { return / \| |\S {3,}\S/.test(line.trim()); });
    if (lines.length >= 3 && aligned.length >= 0.6 * lines.length) pre.classList.add("kd-tabular");
  });
});
