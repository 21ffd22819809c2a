"""Shared fixtures. Data fixtures skip (with the reason) when the shared CIFAR-10 copy is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# The dashboard imports torch on first model use, from whichever request thread gets there
# first. dash_duo stops its server thread at teardown by raising an exception inside it; a
# thread stopped while importing torch leaves half-imported torch submodules behind that
# break every later import in this process. Import it once, before any server starts.
import torch  # noqa: F401
import torchvision  # noqa: F401 - imported lazily by the faithfulness card; it imports torch._dynamo and sympy

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "checkpoints"
_DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10"


def _cifar_dir() -> Path | None:
    d = Path(os.environ.get("XAI_DATA_DIR", _DEFAULT_DATA))
    return d if (d / "cifar10_train.npz").is_file() and (d / "cifar10_test.npz").is_file() else None


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    """The shared CIFAR-10 npz folder (``$XAI_DATA_DIR``, else ``../shared/data/cifar10``)."""
    d = _cifar_dir()
    if d is None:
        pytest.skip("CIFAR-10 npz files not found: set XAI_DATA_DIR to ../shared/data/cifar10")
    return d


# ---------------------------------------------------------------- dashboard fixtures and browser setup

CHROMIUM = "/usr/bin/chromium"
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run", "--window-size=1400,1600")

# selenium 4.2 finds chromedriver on PATH only (no selenium-manager); Debian installs it in /usr/bin.
if "/usr/bin" not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + "/usr/bin"


def pytest_setup_options():
    """Chrome options for dash_duo: always headless, and Debian's Chromium when it is installed."""
    from selenium.webdriver.chrome.options import Options

    options = Options()
    if Path(CHROMIUM).is_file():
        options.binary_location = CHROMIUM
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    return options


@pytest.fixture(autouse=True)
def _fresh_attribution_thread(request):
    """dash_duo stops its server by raising SystemExit in every thread started during the test, the
    process's one attribution thread (xai_dashboard.attribution_queue) included. The queue replaces a
    stopped thread, but the stop lands up to a second later, and a render the next test hands that thread
    meanwhile is answered 503. After a browser test (this fixture's teardown runs after dash_duo's), the
    next attribution starts a new queue."""
    import sys

    yield
    queue = sys.modules.get("xai_dashboard.attribution_queue")  # nothing to replace when never imported
    if queue is not None and "dash_duo" in request.fixturenames:
        queue._forget()


# The two CIFAR-10 runs the dashboard tests pair: a GELU and a ReLU model (other shipped runs, e.g. the
# AugMix variant of cifar10-fast, come after them).
PAIRED = ("cifar10-fast", "cifar10-simple_cnn")


def _cifar_run_dirs() -> list[Path]:
    """Complete CIFAR-10 run directories: shipped ones (checkpoints/) first, :data:`PAIRED` first among
    them, then local runs/."""
    from trainer.rundir import RunDirError, find_runs, load_run

    found = []
    for root in (CHECKPOINTS, ROOT / "runs"):
        for d in find_runs(root) if root.is_dir() else []:
            try:
                run = load_run(d)
            except RunDirError:
                continue  # still being written, or broken: not ours to judge here
            if run.meta["dataset"]["name"] == "cifar10":
                found.append(d)
    shipped = [d for d in found if d.parent == CHECKPOINTS]
    first = sorted(shipped, key=lambda d: PAIRED.index(d.name) if d.name in PAIRED else len(PAIRED))
    return first + [d for d in found if d not in shipped]


@pytest.fixture(scope="session")
def cifar_store(cifar_dir):
    """A RunStore with up to two CIFAR-10 runs (shared by the dashboard tests: loading is not free)."""
    from xai_dashboard.store import RunStore

    dirs = _cifar_run_dirs()[:2]
    if not dirs:
        pytest.skip("no CIFAR-10 run directory under checkpoints/ or runs/")
    store = RunStore.from_dirs(dirs, str(cifar_dir))
    if not any(r.meta["dataset"]["name"] == "cifar10" for r in store.runs.values()):
        pytest.skip(f"CIFAR-10 runs could not be opened: {store.banner}")
    return store


@pytest.fixture(scope="session")
def demo_store():
    from xai_dashboard.store import RunStore

    return RunStore.from_dirs([CHECKPOINTS / "digits-demo"])


@pytest.fixture(scope="session")
def mixed_store(cifar_dir):
    """One CIFAR-10 run and the digits demo: two runs whose matrices certainly differ."""
    from xai_dashboard.store import RunStore

    dirs = _cifar_run_dirs()[:1]
    if not dirs:
        pytest.skip("no CIFAR-10 run directory under checkpoints/ or runs/")
    return RunStore.from_dirs([dirs[0], CHECKPOINTS / "digits-demo"], str(cifar_dir))
