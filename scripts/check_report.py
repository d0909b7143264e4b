"""Open a run's HTML report, or a screen's leaderboard, in headless Chromium: render it,
screenshot it, and fail on console errors or blocked resources.

    python scripts/check_report.py RUN_DIR [--screenshot docs/img/report.png]
    python scripts/check_report.py SCREEN_DIR [--screenshot docs/img/leaderboard.png]

Needs Debian's chromium (apt-get install chromium). Exit 0 when the page rendered
(its DOM holds the title, the plots and the points or models table, and a leaderboard's
links lead to reports that exist) and the browser logged no console error, uncaught
exception or Content-Security-Policy violation.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote

from visage_local.reading.leaderboard import write_leaderboard
from visage_local.reading.report import write_report
from visage_local.record import ScreenFolder

BAD_LOG = re.compile(r"CONSOLE|Uncaught|Refused to|Content Security Policy|ERR_", re.IGNORECASE)


def chromium(*args: str, profile: str) -> subprocess.CompletedProcess:
    """Run headless Chromium with a throw-away profile."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args()
    screen = ScreenFolder(args.run_dir).is_screen()
    page = write_leaderboard(args.run_dir) if screen else write_report(args.run_dir)
    url = page.resolve().as_uri()
    problems = []
    section = "<h2>Models</h2>" if screen else "<h2>Points</h2>"
    with tempfile.TemporaryDirectory() as profile:
        dom = chromium("--dump-dom", url, profile=profile)
        for needle in ("<h1>", "data:image/png;base64,", section, "<table>"):
            if needle not in dom.stdout:
                problems.append(f"rendered page lacks {needle!r}")
        for link in re.findall(r'href="([^"]+)"', dom.stdout):
            if not (page.parent / unquote(link)).is_file():
                problems.append(f"link to a missing file: {link}")
        problems += [
            f"browser log: {line}" for line in dom.stderr.splitlines() if BAD_LOG.search(line)
        ]
        if args.screenshot is not None:
            shot = chromium(
                f"--screenshot={args.screenshot.resolve()}",
                "--window-size=1100,1500",
                "--hide-scrollbars",
                url,
                profile=profile,
            )
            if not args.screenshot.is_file():
                problems.append(f"no screenshot written: {shot.stderr[-500:]}")
    for problem in problems:
        print(problem)
    print(f"{page}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
