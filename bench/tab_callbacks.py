"""Callback requests per tab click: how many ``POST /_dash-update-component`` opening each tab costs, and
whose callbacks they were (the views owning their outputs, :mod:`tests.callback_owners`).

The app is served in this process (werkzeug, threaded, as dash_duo serves it), its callback requests
recorded on the server. Headless Chromium loads the page and waits until no request has come for a while,
then clicks every tab in turn, the second one again (a view reopened) and the first. Per click: the
requests, those answered with content (200) or with nothing (204: a callback that found nothing to do,
after the round trip), and how many were the opened view's, other views' or global (the address).
Each of these requests holds a gunicorn worker thread for its round trip.

    python bench/tab_callbacks.py [--list] [--twin] [RUN_DIR ...]     (default: checkpoints/digits-demo)

``--twin`` adds a copy of the digits demo with its own weights and noisier logits (``make_twin`` of
``tests/test_callback_inputs.py``), so that the comparison view has two runs to compare.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
from pathlib import Path

import common
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import make_server

from tests.callback_owners import Requests, describe, owners, tabs_of, view_of
from xai_dashboard.app import create_app
from xai_dashboard.store import RunStore


def click_counts(calls, view: str, owner: dict) -> tuple[int, ...]:
    """(requests, answered 200, answered 204, the opened view's, other views', global)."""
    whose = [view_of(out, owner) for out, _ in calls]
    return (len(calls), sum(s == 200 for _, s in calls), sum(s == 204 for _, s in calls),
            whose.count(view), sum(w not in (None, view) for w in whose), whose.count(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=[str(common.ROOT / "checkpoints" / "digits-demo")])
    parser.add_argument("--list", action="store_true", help="print every request of every click")
    parser.add_argument("--twin", action="store_true", help="add a twin of the digits demo (see above)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = args.runs
        if args.twin:
            from tests.test_callback_inputs import make_twin

            runs = [*runs, str(make_twin(Path(tmp) / "digits-twin"))]
        measure(create_app(store=RunStore.from_dirs(runs, os.environ.get("XAI_DATA_DIR"))), args.list)


def measure(app, listed: bool) -> None:
    """Load the page in Chromium, click every tab, print the requests of each click."""
    requests, owner, tabs = Requests(app), owners(app), tabs_of(app)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    port = common.free_port()
    server = make_server("127.0.0.1", port, app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with common.chromium() as driver:
            common.open_page(driver, f"http://127.0.0.1:{port}/", common.page_shows(tabs[0].label, "#run-select"))
            WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "overview-cards").text)
            loaded = requests.settle()
            print(f"runs: {', '.join(app.server.config['XAI_STORE'].names)}; load average {common.load_average()}")
            print(f"page load: {len(loaded)} callback requests ({sum(s == 200 for _, s in loaded)} answered 200)")
            print(f"{'tab click':<30} {'requests':>8} {'200':>4} {'204':>4} {'its view':>8} {'other views':>11}"
                  f" {'global':>6}")
            totals = []
            for n, tab in enumerate([*tabs[1:], tabs[1], tabs[0]]):
                requests.clear()
                driver.find_element(By.XPATH, common.TAB_XPATH.format(tab.label)).click()
                calls = requests.settle()
                counts = click_counts(calls, tab.value, owner)
                totals.append(counts[0])
                label = tab.label + (" (again)" if n >= len(tabs) - 1 else "")
                print(f"{label:<30} " + " ".join(f"{c:>{w}}" for c, w in zip(counts, (8, 4, 4, 8, 11, 6))))
                if listed:
                    print("    " + describe(calls, owner).replace("\n", "\n    "))
            print(f"mean over {len(totals)} clicks: {sum(totals) / len(totals):.1f} requests a click")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
