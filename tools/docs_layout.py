"""Measure the built docs site at 1,280 px in headless Chromium: every page's
code blocks and tables that overflow their column, and inline code broken
over two lines.

The release checklist's look at the site (docs/release.md), made
mechanical: it needs Chromium (``chromium`` on PATH or ``--chromium``),
which the test machines need not have, so it is a tool, not a test.

How: the site is served on 127.0.0.1 (a free port) with one extra page,
``/__layout__?page=<path>``, which loads the page in a 1,280 px wide iframe
(same origin) and, once it has loaded, measures it with a script and writes
the findings into its own document as JSON. Chromium prints that document
(``--dump-dom``, after ``--virtual-time-budget`` has let the iframe load and
the script run), and the findings are read back from it.

Run::

    make docs
    python tools/docs_layout.py .venv/site                  # every page
    python tools/docs_layout.py .venv/site --page redis/ --shots /tmp/shots

Exits 1 when a page has a finding (listed), 0 otherwise.
"""

from __future__ import annotations

import argparse
import html
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.parse
from functools import partial
from pathlib import Path
from typing import Any

WIDTH = 1280
HEIGHT = 900

# Run inside the probe page once the iframe has loaded. A block overflows when
# its content is wider than its box (it would scroll); inline code is broken
# when the browser lays it out on more than one line.
_MEASURE = """
function measure(doc) {
  const found = [];
  const text = (el) => el.textContent.trim().slice(0, 60);
  const blocks = doc.querySelectorAll(".md-content pre");
  const tables = doc.querySelectorAll(
    ".md-content .md-typeset__scrollwrap, .md-content .md-typeset__table, .md-content table");
  for (const pre of blocks) {
    if (pre.scrollWidth > pre.clientWidth + 1) {
      found.push({kind: "code block", extra: pre.scrollWidth - pre.clientWidth,
                  text: text(pre)});
    }
  }
  for (const wrap of tables) {
    if (wrap.scrollWidth > wrap.clientWidth + 1) {
      found.push({kind: "table", extra: wrap.scrollWidth - wrap.clientWidth,
                  text: text(wrap)});
    }
  }
  for (const code of doc.querySelectorAll(".md-content :not(pre) > code")) {
    if (code.getClientRects().length > 1) {
      found.push({kind: "inline code broken", extra: 0, text: text(code)});
    }
  }
  const column = doc.querySelector(".md-content");
  return {found: found, column: column ? column.clientWidth : 0,
          blocks: blocks.length, tables: tables.length};
}
const frame = document.getElementById("page");
frame.addEventListener("load", () => {
  const out = document.getElementById("out");
  try {
    out.textContent = JSON.stringify(measure(frame.contentDocument));
  } catch (e) {
    out.textContent = JSON.stringify({error: String(e)});
  }
});
"""

_PROBE = """<!doctype html>
<html><body style="margin:0">
<iframe id="page" src="{src}" style="width:{width}px;height:{height}px;border:0"></iframe>
<pre id="out">pending</pre>
<script>{script}</script>
</body></html>
"""


class _Handler(http.server.SimpleHTTPRequestHandler):
    """The site's files, and the probe page."""

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/__layout__":
            super().do_GET()
            return
        page = urllib.parse.parse_qs(url.query).get("page", ["/"])[0]
        body = _PROBE.format(
            src=html.escape(page, quote=True), width=WIDTH, height=HEIGHT, script=_MEASURE
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: one line per file otherwise


def pages(site: Path) -> list[str]:
    """Every page of the site, as a URL path (``/``, ``/redis/``, ...)."""
    found = []
    for index in sorted(site.rglob("index.html")):
        relative = index.parent.relative_to(site).as_posix()
        if relative.startswith(("assets", "search")):
            continue
        found.append("/" if relative == "." else f"/{relative}/")
    return found


def chromium(binary: str, *args: str) -> str:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120).stdout


def measure(binary: str, base: str, page: str) -> dict[str, Any]:
    """The probe's findings for one page."""
    probe = f"{base}/__layout__?page={urllib.parse.quote(page)}"
    dom = chromium(
        binary,
        f"--window-size={WIDTH + 40},{HEIGHT + 200}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe,
    )
    match = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    if match is None:
        return {"error": "the probe page did not render"}
    text = html.unescape(match.group(1))
    if text == "pending":
        return {"error": "the page did not load within the time budget"}
    result: dict[str, Any] = json.loads(text)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the built site (make docs: .venv/site)")
    parser.add_argument("--page", action="append", help="a page such as redis/ (repeatable)")
    parser.add_argument("--shots", type=Path, help="also write a screenshot per page here")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    options = parser.parse_args(argv)
    site: Path = options.site
    if not (site / "index.html").is_file():
        parser.error(f"{site} holds no built site (run make docs)")
    if shutil.which(options.chromium) is None:
        parser.error(f"no Chromium at {options.chromium!r} (pass --chromium PATH)")
    selected = [f"/{p.strip('/')}/" if p.strip("/") else "/" for p in options.page or []]
    handler = partial(_Handler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    failed = blocks = tables = 0
    chosen = selected or pages(site)
    try:
        for page in chosen:
            result = measure(options.chromium, base, page)
            findings = result.get("found", [])
            blocks += result.get("blocks", 0)
            tables += result.get("tables", 0)
            if "error" in result or findings:
                failed += 1
                print(f"{page}: {result.get('error', '')}")
                for finding in findings:
                    print(f"  {finding['kind']} (+{finding['extra']} px): {finding['text']!r}")
            if options.shots is not None:
                options.shots.mkdir(parents=True, exist_ok=True)
                name = page.strip("/").replace("/", "_") or "index"
                chromium(
                    options.chromium,
                    f"--window-size={WIDTH},{HEIGHT}",
                    f"--screenshot={options.shots / name}.png",
                    base + page,
                )
    finally:
        server.shutdown()
        server.server_close()
    print(f"{len(chosen)} pages, {blocks} code blocks, {tables} tables measured at {WIDTH} px")
    print(f"{failed} page(s) with findings" if failed else "no findings")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
