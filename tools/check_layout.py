"""Check the built book as readers see it, page by page, in headless Chromium (a tool for authors).

    python tools/check_layout.py [_build/html] [--pages GLOB] [--widths 390 1366] [--static] [--json FILE]

For every page and window width it reports the document's ``scrollWidth`` (wider than the window means
the whole page scrolls sideways), the number of cell-output blocks whose content overflows horizontally
(printed tables, which scroll inside their own box on a phone by design, are counted apart), and the
browser console's errors. Widths under Chromium's smallest window (~500 px) are measured in a frame. Without a browser (``--static``) and in every run it also checks the
HTML itself: Colab/Binder links that open the instructor copy instead of ``student/``, duplicate
viewport tags or inline scripts, figures whose alt text is a file path or the generic fallback, and
tooling that shows (nbval markers, install or recording code outside a folded cell).

Chromium: ``apt-get install -y chromium`` (or set ``$CHROMIUM``). Exit status 1 when a page is wider than
its window, an output overflows, a launch link opens the instructor copy, or tooling shows.
"""
from __future__ import annotations

import argparse
import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
from kd_book import FALLBACK_ALT  # noqa: E402  (the alt text the book gives a figure without one)
REPORT_ID = "kd-layout-report"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--hide-scrollbars", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=8000", "--run-all-compositor-stages-before-draw"]

# Injected at the end of every served page; the measurements end up in the dumped DOM.
MEASURE_JS = """
<script>
window.addEventListener("load", function () {
  setTimeout(function () {
    var doc = document.documentElement, blocks = document.querySelectorAll("div.cell_output > .output");
    var overflowing = [], tables = 0, wide = [];
    blocks.forEach(function (block) {
      var parts = [block].concat(Array.prototype.slice.call(block.querySelectorAll("pre, table, div, img")));
      var over = parts.filter(function (el) { return el.scrollWidth > el.clientWidth + 1; });
      // a printed table keeps its columns on a phone and scrolls in its own box, by design (kd_book.js)
      var table = block.querySelector("pre.kd-tabular");
      if (over.length && table && table.scrollWidth > table.clientWidth + 1) tables += 1;
      else if (over.length) overflowing.push((block.innerText || "").split("\\n")[0].slice(0, 60));
    });
    document.querySelectorAll("body *").forEach(function (el) {
      var r = el.getBoundingClientRect();
      if (!(r.right > window.innerWidth + 1 && r.width > 0 && el.children.length === 0 && wide.length < 5)) return;
      for (var a = el.parentElement; a; a = a.parentElement) {  // inside its own scroll box: not the page's
        var ox = getComputedStyle(a).overflowX;
        if (ox !== "visible" && ox !== "clip" && a.getBoundingClientRect().right <= window.innerWidth + 1) return;
      }
      var name = function (e) { return e.tagName.toLowerCase() + (typeof e.className === "string" && e.className
                                 ? "." + e.className.trim().split(/\s+/).join(".") : ""); };
      wide.push((el.parentElement ? name(el.parentElement) + " > " : "") + name(el) + " right=" + Math.round(r.right));
    });
    var text = (document.querySelector("main") || document.body).innerText;
    var out = document.createElement("pre");
    out.id = "%s";
    out.textContent = JSON.stringify({innerWidth: window.innerWidth, scrollWidth: doc.scrollWidth,
      outputs: blocks.length, overflowing: overflowing, scrollingTables: tables, wide: wide, visibleText: text});
    // measured inside the frame of the given width; the report goes to the top page, which is dumped
    (window.parent !== window ? parent.document.body : document.body).appendChild(out);
  }, 500);
});
</script>
""" % REPORT_ID

TOOLING = {  # pattern in the visible text -> what it is
    r"#\s*NBVAL_\w+": "an nbval comment marker",
    r"\bRecorder\(|\.record\(": "recording code outside a folded cell",
    r"google\.colab|%pip install": "the Colab install cell",
}


def chromium() -> Optional[str]:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


FRAME = "/__kd_frame__/"  # /__kd_frame__/<width>/<page>: the page in a frame <width> CSS pixels wide


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def send_head(self):
        # Chromium's window cannot be narrower than about 500 px, so phone widths are measured in a frame.
        if self.path.startswith(FRAME):
            width, page = self.path[len(FRAME):].split("/", 1)
            body = (f'<!DOCTYPE html><html><body style="margin:0"><iframe src="/{page}" '
                    f'style="width:{int(width)}px;height:900px;border:0"></iframe></body></html>').encode()
            return self._send(body)
        path = Path(self.translate_path(self.path))
        if path.suffix != ".html" or not path.is_file():
            return super().send_head()
        return self._send(path.read_text(encoding="utf-8").replace("</body>", MEASURE_JS + "</body>").encode())

    def _send(self, body: bytes):
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        import io
        return io.BytesIO(body)


def serve(directory: Path) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_Handler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def measure(browser: str, base: str, page: str, width: int) -> dict:
    url = f"{base}{FRAME}{width}/{page}"
    proc = subprocess.run([browser, *FLAGS, f"--window-size={width + 40},1000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    match = re.search(rf'<pre id="{REPORT_ID}">(.*?)</pre>', proc.stdout, re.S)
    result = json.loads(html.unescape(match.group(1))) if match else {"error": "no measurement (page did not load)"}
    console = [m.group(1) for m in re.finditer(r"CONSOLE[:(]\d+\)?\] (.*)", proc.stderr)]
    result["console"] = [line for line in console if "unpkg.com" not in line or "Failed" not in line]
    return result


# ----------------------------------------------------------------------------- static checks of the HTML
def static_checks(page: Path) -> Dict[str, List[str]]:
    text = page.read_text(encoding="utf-8")
    found: Dict[str, List[str]] = {}
    launch = re.findall(r'href="(https://(?:colab\.research\.google\.com/github|mybinder\.org)/[^"]+)"', text)
    instructor = [u for u in launch if re.search(r"/blob/[^/]+/notebooks/|urlpath=(?:lab/)?tree/notebooks/", u)]
    if instructor:
        found["launch links to the instructor copy"] = sorted(set(instructor))
    viewports = len(re.findall(r'<meta name="viewport"', text))
    if viewports > 1:
        found["viewport tags"] = [str(viewports)]
    inline = Counter(m.group(1).strip() for m in re.finditer(r"<script>(.*?)</script>", text, re.S))
    repeated = [body[:60] for body, n in inline.items() if n > 1]
    if repeated:
        found["inline scripts repeated"] = repeated
    alts = re.findall(r'<img alt="([^"]*)" src="([^"]+)"', text)
    path_alts = [src for alt, src in alts if not alt or alt == src or re.search(r"\.(png|svg|jpe?g)$", alt)]
    if path_alts:
        found["figures whose alt text is a file path"] = path_alts
    generic = [src for alt, src in alts if alt == FALLBACK_ALT]
    if generic:
        found["figures without a description (cell metadata mystnb.image.alt)"] = [str(len(generic))]
    return found


FAILING_STATIC = ("launch links to the instructor copy", "viewport tags", "inline scripts repeated",
                  "figures whose alt text is a file path")


def pages(html_dir: Path, pattern: str) -> List[Path]:
    skip = {"genindex.html", "search.html"}
    return sorted(p for p in html_dir.glob(pattern) if p.name not in skip and "_static" not in p.parts
                  and "_sources" not in p.parts)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html_dir", nargs="?", default=str(ROOT / "_build" / "html"))
    parser.add_argument("--pages", default="**/*.html", help="glob of pages under html_dir")
    parser.add_argument("--widths", type=int, nargs="+", default=[390, 1366])
    parser.add_argument("--static", action="store_true", help="only the HTML checks, no browser")
    parser.add_argument("--json", help="also write every measurement to this file")
    args = parser.parse_args(argv)
    html_dir = Path(args.html_dir)
    found_pages = pages(html_dir, args.pages)
    if not found_pages:
        print(f"no pages under {html_dir}: build the book first (make book)")
        return 2
    browser = None if args.static else chromium()
    if not args.static and browser is None:
        print("no Chromium found (apt-get install -y chromium, or $CHROMIUM); running the static checks only")
    server = serve(html_dir) if browser else None
    report, failing = {}, 0
    header = "page".ljust(48) + "".join(f"{'width@' + str(w):>11}{'overflow':>9}" for w in args.widths)
    if browser:
        print(header + "  console errors")
    for page in found_pages:
        rel = page.relative_to(html_dir).as_posix()
        entry = {"static": static_checks(page)}
        if browser:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            entry["widths"] = {w: measure(browser, base, rel, w) for w in args.widths}
            row = rel[:47].ljust(48)
            errors = set()
            for w, m in entry["widths"].items():
                if "error" in m:
                    row += f"{'?':>11}{'?':>9}"
                    failing += 1
                    continue
                row += f"{m['scrollWidth']:>11}{len(m['overflowing']):>4}/{m['outputs']:<4}"
                failing += m["scrollWidth"] > m["innerWidth"] or bool(m["overflowing"])
                errors |= {c for c in m["console"] if "rror" in c}
                for pattern, what in TOOLING.items():
                    hits = re.findall(pattern, m.pop("visibleText", ""))
                    if hits:
                        entry["static"].setdefault(f"visible tooling: {what}", []).extend(hits[:3])
                        failing += 1
            tables = {w: m.get("scrollingTables", 0) for w, m in entry["widths"].items() if m.get("scrollingTables")}
            print(row + f"  {len(errors)}" + "".join(f"   ({n} printed tables scroll in their box at {w}px)"
                                                  for w, n in tables.items()))
            for error in sorted(errors):
                print(f"    console: {error[:150]}")
            for w, m in entry["widths"].items():
                if m.get("scrollWidth", 0) > m.get("innerWidth", w):
                    print(f"    at {w}px the widest elements: {'; '.join(m['wide'])}")
        for what, items in entry["static"].items():
            failing += what in FAILING_STATIC
            print(f"  {rel}: {what}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}")
        report[rel] = entry
    if server:
        server.shutdown()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print("OK" if not failing else f"{failing} problem(s)")
    return 1 if failing else 0


if __name__ == "__main__":
    sys.exit(main())
