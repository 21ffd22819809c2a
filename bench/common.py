"""What the dashboard benches share: timings summarised as p50 / p95 / max, free ports, the dashboard
started as a user starts it (``xai-dashboard``, its own analysis cache), headless Chromium set up as the
browser tests drive it, pages opened until they show what a measurement starts from, and Dash callback
requests built as the page builds them.

The scripts run as ``python bench/NAME.py``, so this folder is first on ``sys.path`` and they ``import
common``; importing it puts the repository on the path too (``xai_dashboard``, ``trainer``, ``tests``).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages first, installed or not

TAB_XPATH = "//*[contains(@class,'tab') and normalize-space()='{}']"


# ---------------------------------------------------------------- timings

def pct(values, q) -> float:
    """The ``q``-th percentile of ``values`` (seconds), in milliseconds."""
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def show(label: str, seconds: list[float], cpu: list[float] | None = None) -> None:
    """One line: how many, p50, p95 and max of ``seconds`` in ms; with ``cpu`` (seconds), its p50 and p95."""
    line = (f"  {label:<44} n={len(seconds):>3}  p50 {pct(seconds, 50):7.1f} ms   p95 {pct(seconds, 95):7.1f} ms"
            f"   max {pct(seconds, 100):7.1f} ms")
    if cpu is not None:  # CPU time of the serving thread: what the wall time is on an uncontended core
        line += f"   | CPU p50 {pct(cpu, 50):5.1f} ms  p95 {pct(cpu, 95):5.1f} ms"
    print(line)


def timed(fn: Callable, *args, clock: Callable[[], float] = time.thread_time) -> tuple[float, float]:
    """``(wall seconds, CPU seconds)`` of ``fn(*args)``; the CPU clock is this thread's by default,
    ``time.process_time`` for work spread over threads (BLAS, torch)."""
    w, c = time.perf_counter(), clock()
    fn(*args)
    return time.perf_counter() - w, clock() - c


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as "1.0, 0.8, 0.5"."""
    return ", ".join(f"{v:.1f}" for v in os.getloadavg())


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the dashboard

def launch(run_dirs, data_dir, port: int, cache_dir) -> subprocess.Popen:
    """``xai-dashboard RUN_DIR ... --port PORT`` with its analysis cache in ``cache_dir``; output discarded."""
    env = dict(os.environ, XAI_CACHE_DIR=str(cache_dir))
    if data_dir:
        env["XAI_DATA_DIR"] = data_dir
    cmd = [str(ROOT / ".venv" / "bin" / "xai-dashboard"), *map(str, run_dirs), "--port", str(port)]
    if not Path(cmd[0]).exists():
        cmd = [sys.executable, "-m", "xai_dashboard.cli", *cmd[1:]]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)


@contextmanager
def dashboard(run_dirs, data_dir, port: int) -> Iterator[subprocess.Popen]:
    """:func:`launch` with a fresh analysis cache, stopped (and the cache removed) on leaving."""
    with tempfile.TemporaryDirectory() as cache:
        proc = launch(run_dirs, data_dir, port, cache)
        try:
            yield proc
        finally:
            proc.terminate()
            proc.wait(20)


def wait_for_server(url: str, t0: float | None = None, timeout: float = 300) -> None:
    """Return once ``url`` answers (a browser sent there earlier would show an error page instead);
    ``timeout`` seconds counted from ``t0`` (``time.perf_counter()``, default now)."""
    t0 = time.perf_counter() if t0 is None else t0
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError("server never answered") from None
            time.sleep(0.05)


def wait_until_idle(pid: int, timeout: float = 60.0) -> float:
    """Seconds until process ``pid`` has used < 2% of a core over 1 s, e.g. after the
    background model load that follows the first page."""
    import psutil

    proc, t0 = psutil.Process(pid), time.perf_counter()
    last = sum(proc.cpu_times()[:2])
    while time.perf_counter() - t0 < timeout:
        time.sleep(1.0)
        now = sum(proc.cpu_times()[:2])
        if now - last < 0.02:
            break
        last = now
    return time.perf_counter() - t0


def callback_body(deps: list[dict], output: str, values: dict, triggered: str) -> dict:
    """The body the browser POSTs to ``/_dash-update-component`` for the callback writing ``output``
    (``"id.prop"``), from the app's ``/_dash-dependencies``; ``values`` maps ``"id.prop"`` to values
    (anything not given is sent as None)."""
    dep = next(d for d in deps if output in d["output"].strip(".").split("..."))
    names = dep["output"].strip(".").split("...")
    outputs = [{"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]} for o in names]

    def arg(d):  # a pattern-matching input (an id that is a JSON object) matches no component here
        return [] if d["id"].startswith("{") else {**d, "value": values.get(f"{d['id']}.{d['property']}")}

    return {"output": dep["output"], "outputs": outputs if dep["output"].startswith("..") else outputs[0],
            "changedPropIds": [triggered], "inputs": [arg(d) for d in dep["inputs"]],
            "state": [arg(d) for d in dep["state"]]}


# ---------------------------------------------------------------- the browser

@contextmanager
def chromium(script_timeout: float = 30) -> Iterator:
    """Headless Chromium with the browser tests' options (``tests/conftest.py``), quit on leaving;
    ``execute_async_script`` gives up after ``script_timeout`` seconds."""
    from selenium import webdriver

    from tests.conftest import pytest_setup_options

    driver = webdriver.Chrome(options=pytest_setup_options())
    driver.set_script_timeout(script_timeout)
    try:
        yield driver
    finally:
        driver.quit()


def page_shows(tab: str | None = None, css: str | None = None) -> Callable:
    """A condition for :func:`open_page`: the tab titled ``tab`` and an element matching ``css`` are on it."""
    from selenium.webdriver.common.by import By

    def ready(driver) -> bool:
        return bool((tab is None or driver.find_elements(By.XPATH, TAB_XPATH.format(tab)))
                    and (css is None or driver.find_elements(By.CSS_SELECTOR, css)))
    return ready


def open_page(driver, url: str, ready: Callable, *, wait: float = 60, timeout: float = 300,
              settle: float = 0.0) -> None:
    """Load ``url`` until ``ready(driver)`` holds within ``wait`` seconds of a load, loading it again (the
    server may still be starting) for up to ``timeout`` seconds; then sleep ``settle`` seconds (the page's
    first callbacks finishing)."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            driver.get(url)
            WebDriverWait(driver, wait).until(ready)
            time.sleep(settle)
            return
        except WebDriverException:  # refused connection, or not rendered yet: try again
            time.sleep(0.5)
    raise TimeoutError(f"{url} never became ready")
