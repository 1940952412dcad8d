"""Look at a report as a reader does: render report.html in headless Chromium at a laptop's width,
save a full-page screenshot, and say whether anything overflows the width (a horizontal scrollbar)
and whether any figure is drawn wider than the page.

Needs Chromium (`apt-get install chromium`); not part of the tests, which must run without it.

Usage: python tools/report_screenshot.py REPORT.html [--width 1366] [--out shot.png]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = (
    "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)  # fmt: skip
PROBE = """<script>window.addEventListener('load', () => {
  const d = document.documentElement, imgs = [...document.images];
  const wide = imgs.filter(i => i.getBoundingClientRect().right > d.clientWidth + 1).map(i => i.alt);
  const tables = [...document.querySelectorAll('table')]
    .filter(t => t.getBoundingClientRect().right > d.clientWidth + 1);
  document.body.setAttribute('data-probe', JSON.stringify({scrollWidth: d.scrollWidth, clientWidth: d.clientWidth,
    height: d.scrollHeight, images: imgs.length, wideImages: wide, wideTables: tables.length}));
});</script>"""


def probe(report: Path, width: int, out: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
        common = [*CHROMIUM, f"--user-data-dir={tmp}/profile", "--virtual-time-budget=5000"]
        dom = subprocess.run([*common, f"--window-size={width},900", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, check=True, timeout=120).stdout  # fmt: skip
        found = json.loads(re.search(r'data-probe="([^"]*)"', dom)[1].replace("&quot;", '"'))
        subprocess.run([*common, f"--window-size={width},{found['height']}", f"--screenshot={out}", page.as_uri()],
                       capture_output=True, check=True, timeout=120)  # fmt: skip
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--width", type=int, default=1366)
    parser.add_argument("--out", type=Path, default=Path("report-screenshot.png"))
    args = parser.parse_args()
    found = probe(args.report, args.width, args.out)
    overflow = found["scrollWidth"] > found["clientWidth"]
    print(json.dumps(found), f"screenshot: {args.out}", sep="\n")
    print("overflows the width" if overflow or found["wideImages"] or found["wideTables"] else "fits the width")
    return 1 if overflow else 0


if __name__ == "__main__":
    sys.exit(main())
