"""The README's pictures: start the dashboard on the shipped digits run, drive headless Chromium through the
main views and write one PNG per view into the top-level ``assets/`` folder.

    .venv/bin/python bench/screenshots.py [--out assets] [--only NAME ...]

The pictures show ``checkpoints/digits-demo`` (scikit-learn's digits, BSD-licensed) and a digit drawn
here: CIFAR-10 images, and pictures containing them, are never committed.

Rerun it whenever a view changes. The views are the :data:`SHOTS` table, in order (each may build on
the page state the one before left: the detail needs the cell's gallery). Every step waits for an
element or a condition, never a fixed time; a step that fails is reported and the others still run.
The window is 1600 x 1000 CSS pixels; the files are quantised to 256 colours to stay small.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, ImageDraw

from common import ROOT, free_port

CHROMIUM = "/usr/bin/chromium"  # Debian's; the same the browser tests use (tests/conftest.py)
WINDOW = (1600, 1000)
TIMEOUT = 90  # seconds for one condition: the first explanation loads torch, Captum and a model

# Where the shots stand: the confusion-matrix cell opened (true, predicted): the correct 8s, least confident first.
CELL = ("8", "8")


def start_server(port: int, cache: Path) -> subprocess.Popen:
    """``xai-dashboard checkpoints/digits-demo`` on ``port``; returns once it answers."""
    env = {**os.environ, "XAI_CACHE_DIR": str(cache)}
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "xai-dashboard"), str(ROOT / "checkpoints" / "digits-demo"),
                             "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(cache / "server.log", "w"))
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited ({proc.returncode}): see {cache / 'server.log'}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return proc
        except OSError:
            time.sleep(0.2)  # polling a socket that is not open yet
    proc.terminate()
    raise RuntimeError(f"the dashboard did not answer within {TIMEOUT} s")


def browser():
    from selenium import webdriver

    os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + "/usr/bin"  # Debian's chromedriver
    options = webdriver.ChromeOptions()
    if Path(CHROMIUM).is_file():
        options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                f"--window-size={WINDOW[0]},{WINDOW[1]}", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options)
    # the window's outer size includes no browser frame in headless mode, but set the viewport exactly
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * WINDOW[0] - inner[0], 2 * WINDOW[1] - inner[1])
    return driver


# ---------------------------------------------------------------- waiting and acting, by condition

def until(driver, condition: Callable, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, TIMEOUT, poll_frequency=0.2).until(lambda d: condition(d), message=what)


def settled(driver) -> bool:
    """No Dash callback is updating any component, and every image on screen has loaded."""
    return driver.execute_script(
        "return !document.querySelector('[data-dash-is-loading=\"true\"]') && "
        "[...document.images].every(i => i.complete)")


def css(driver, selector: str):
    return until(driver, lambda d: d.find_elements("css selector", selector), f"{selector} never appeared")[0]


def drawn(driver, selector: str) -> None:
    """A dcc.Graph under ``selector`` has plotted data."""
    until(driver, lambda d: d.execute_script(
        "const g = document.querySelector(arguments[0] + ' .js-plotly-plot');"
        "return !!(g && g.data && g.data.length)", selector), f"{selector} never plotted")


def src_set(driver, selector: str, before: str = "") -> str:
    """Wait until the image ``selector`` shows a data URL other than ``before``; returns it."""
    def ready(d):
        found = d.find_elements("css selector", selector)
        src = (found[0].get_attribute("src") or "") if found else ""
        return src if src.startswith("data:image") and src != before else False
    return until(driver, ready, f"{selector} never drew a new image")


def open_tab(driver, title: str) -> None:
    until(driver, lambda d: d.find_elements(
        "xpath", f"//*[contains(@class, 'tab') and normalize-space()='{title}']"), f"no tab {title!r}")[0].click()


def still(driver) -> None:
    """Wait until the page has stopped scrolling (a view may bring its result into view by itself)."""
    until(driver, lambda d: d.execute_script(  # unmoved over two animation frames (WebDriver awaits the promise)
        "const y = window.scrollY;"
        "return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(window.scrollY === y))))"),
        "the page kept scrolling")


def show(driver, selector: str) -> None:
    """Scroll ``selector``'s top to the top of the window, unless the page already shows all of it."""
    still(driver)
    driver.execute_script(
        "const e = document.querySelector(arguments[0]); const r = e.getBoundingClientRect();"
        "if (r.top < 0 || r.bottom > window.innerHeight) window.scrollBy(0, r.top - 8);", selector)


def save(driver, path: Path) -> None:
    until(driver, settled, "the page never settled")
    driver.save_screenshot(str(path))
    img = Image.open(path).convert("RGB")
    img.quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


# ---------------------------------------------------------------- the views

def overview(driver, base: str) -> None:
    driver.get(base)
    until(driver, lambda d: "ACCURACY" in css(d, "#overview-cards").text.upper(), "overview cards never filled")
    drawn(driver, "#roc-graph")


def confusion_cell(driver, base: str) -> None:
    open_tab(driver, "Confusion & gallery")
    drawn(driver, "#confusion-matrix")
    names = driver.execute_script("return document.querySelector('#confusion-matrix .js-plotly-plot').data[0].x")
    true, pred = (names.index(c) for c in CELL)
    point = {"x": CELL[1], "y": CELL[0], "curveNumber": 0, "pointNumber": [true, pred], "pointIndex": [true, pred]}
    driver.execute_script("document.querySelector('#confusion-matrix .js-plotly-plot')"
                          ".emit('plotly_click', {points: [arguments[0]]});", point)  # as a real click does
    until(driver, lambda d: d.find_elements("css selector", "#gallery .gallery-item img"), "the gallery stayed empty")
    show(driver, ".cm-card")  # the matrix with its selected cell, the gallery below it


def image_detail(driver, base: str) -> None:
    css(driver, "#gallery .gallery-item").click()
    src_set(driver, "#xp-detail-overlay")
    drawn(driver, "#xp-detail-scale")
    show(driver, "#image-detail")


def explanation(driver, base: str) -> None:
    open_tab(driver, "Explanations")  # the image the gallery selected
    src_set(driver, "#gradcam-overlay")
    until(driver, lambda d: len(d.find_elements("css selector", "#xp-contrast img")) == 3, "no contrast maps")
    drawn(driver, "#xp-overlay-scale")
    show(driver, "#xp-method")


def drawn_digit(path: Path) -> Path:
    """A handwritten-looking 3, drawn here (white strokes on black, as the digits are): no dataset image is written."""
    img = Image.new("L", (128, 128))
    draw = ImageDraw.Draw(img)
    draw.arc((34, 14, 94, 66), 200, 90, fill=255, width=12)
    draw.arc((30, 58, 96, 116), 270, 160, fill=255, width=12)
    img.save(path)
    return path


def upload(driver, base: str) -> None:
    before = src_set(driver, "#gradcam-overlay")
    path = drawn_digit(Path(tempfile.mkdtemp(prefix="xai-shots-")) / "drawn-3.png")
    css(driver, "#upload-image input[type=file]").send_keys(str(path))
    until(driver, lambda d: "drawn-3.png" in d.find_element("id", "xp-source-label").text, "the upload was ignored")
    src_set(driver, "#gradcam-overlay", before)
    show(driver, "#upload-image")


@dataclass(frozen=True)
class Shot:
    name: str                         # assets/NAME.png
    show: Callable[[object, str], None]  # (driver, base URL): bring the view on screen


# The views, in order; a view added to the dashboard is one more entry here.
SHOTS = (
    Shot("overview", overview),
    Shot("confusion-cell", confusion_cell),
    Shot("image-detail", image_detail),
    Shot("explanation", explanation),
    Shot("upload", upload),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "assets", help="folder for the PNGs (default: %(default)s)")
    p.add_argument("--only", nargs="*", default=None, metavar="NAME",
                   help=f"these shots only (their predecessors still run): {', '.join(s.name for s in SHOTS)}")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    with tempfile.TemporaryDirectory(prefix="xai-shots-") as tmp:
        port = free_port()
        server = start_server(port, Path(tmp))
        driver = browser()
        try:
            for shot in SHOTS:
                start = time.perf_counter()
                try:
                    shot.show(driver, f"http://127.0.0.1:{port}/")
                    if args.only is None or shot.name in args.only:
                        save(driver, args.out / f"{shot.name}.png")
                        size = (args.out / f"{shot.name}.png").stat().st_size
                        print(f"{shot.name:16s} {time.perf_counter() - start:5.1f} s  {size / 1024:5.0f} KB  "
                              f"{args.out / shot.name}.png")
                except Exception as e:  # one broken view must not cost the other pictures
                    failed.append(shot.name)
                    print(f"{shot.name:16s} FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                          file=sys.stderr)
        finally:
            driver.quit()
            server.terminate()
            server.wait(timeout=30)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
