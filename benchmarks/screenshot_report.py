"""Render a report's HTML page in headless Chromium and save a screenshot, as a user would see it.

    python benchmarks/screenshot_report.py artifacts/quickstart/report/report.html --out shot.png

Needs a `chromium` (or `chromium-browser`, `google-chrome`) binary: on Debian,
`apt-get install -y chromium`. Exit code 3 when none is found.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(html: Path, out: Path, width: int = 1280, height: int = 2400, timeout_s: float = 120.0) -> Path:
    """Save a PNG of `html` (a local file) rendered by headless Chromium."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no chromium binary on PATH (apt-get install -y chromium)")
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={out}",
                Path(html).resolve().as_uri(),
            ],
            check=True, capture_output=True, timeout=timeout_s,
        )
    if not out.is_file() or out.read_bytes()[:8] != PNG_SIGNATURE:
        raise RuntimeError(f"chromium wrote no PNG at {out}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html", type=Path, help="report.html written by `compress report`")
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: beside the HTML)")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args()
    if find_browser() is None:
        print("no chromium found: apt-get install -y chromium", file=sys.stderr)
        return 3
    out = screenshot(args.html, args.out or args.html.with_name("screenshot.png"), args.width, args.height)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
