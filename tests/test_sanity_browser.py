"""The "fails the randomisation check" badge (Adebayo et al. 2018) in headless Chromium, wherever a
failing method's maps are shown: the explanations tab (its method list and the card), the gallery's
image detail and the side-by-side grid. The digits demo ships a sanity.json in which Integrated
Gradients fails (its maps keep a mean Spearman correlation above 0.5 with every layer re-initialised)
and Grad-CAM passes; the test reads that from the file, so no shared data is needed."""
from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from xai_dashboard.app import create_app
from xai_dashboard.methods import METHODS
from xai_dashboard.sanity_file import BADGE, failing_methods, load_sanity

pytestmark = pytest.mark.browser
SLOW = 90  # seconds: the first maps import Captum and load the model on a shared core
FAILS, PASSES = "integrated_gradients", "gradcam"


def _text(driver, selector: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


def _open_tab(driver, title: str) -> None:
    driver.find_element(By.XPATH, f"//*[contains(@class, 'tab') and normalize-space()='{title}']").click()


def _choose(driver, selector: str, label: str) -> None:
    """Pick the option reading ``label`` in dcc.Dropdown ``selector``, once a callback offers it."""
    def pick(d) -> bool:
        d.find_element(By.CSS_SELECTOR, selector).click()
        for option in d.find_elements(By.CSS_SELECTOR, ".dash-dropdown-option"):
            if option.text == label:
                option.click()
                return True
        d.find_element(By.CSS_SELECTOR, selector).click()  # closed again; the options may still be coming
        return False

    WebDriverWait(driver, SLOW).until(pick, message=f"{label!r} never offered in {selector}")


def test_badge_marks_a_failing_method_wherever_its_maps_are_shown(dash_duo, demo_store, tmp_path, monkeypatch):
    run = demo_store.get(None)
    failing = failing_methods(load_sanity(run.run.path, run.meta)[0])
    assert FAILS in failing and PASSES not in failing  # the shipped file's verdicts
    monkeypatch.setenv("XAI_CACHE_DIR", str(tmp_path / "cache"))
    dash_duo.start_server(create_app(store=demo_store))
    driver = dash_duo.driver
    wait = lambda p, what: WebDriverWait(driver, SLOW).until(p, message=what)  # noqa: E731
    flagged = f"{METHODS[FAILS].label} ⚠ {BADGE}"

    # the explanations tab: no badge on Grad-CAM's map; the failing method is flagged in the list and on its map
    dash_duo.wait_for_element("#run-select", timeout=SLOW)
    _open_tab(driver, "Explanations")
    wait(lambda d: (d.find_element(By.ID, "gradcam-overlay").get_attribute("src") or "").startswith("data:image"),
         "first overlay never drew")
    assert BADGE not in _text(driver, "#xp-sanity-badge")
    _choose(driver, "#xp-method", flagged)  # the method list flags it
    wait(lambda d: BADGE in _text(d, "#xp-sanity-badge"), "no badge on the explanations tab")
    assert "Adebayo" in _text(driver, "#xp-sanity-badge")  # the one-line explanation and its reference

    # the gallery's image detail
    _open_tab(driver, "Confusion & gallery")
    wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery .gallery-item"), "gallery is empty")
    driver.find_elements(By.CSS_SELECTOR, "#gallery .gallery-item")[0].click()
    wait(lambda d: (d.find_element(By.ID, "xp-detail-overlay").get_attribute("src") or "").startswith("data:image"),
         "no overlay in the image detail")
    assert BADGE not in _text(driver, "#xp-detail-caption")
    _choose(driver, "#xp-detail-method", flagged)
    wait(lambda d: BADGE in _text(d, "#xp-detail-caption"), "no badge in the image detail")

    # the side-by-side grid, one click from the detail: the failing method's cell has it, Grad-CAM's not
    driver.find_element(By.CSS_SELECTOR, "#detail-explain .sbs-open").click()
    wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#sbs-grid td.sbs-cell img"), "side-by-side grid never drew")
    _choose(driver, "#sbs-methods", METHODS[FAILS].label)
    cell = f"#sbs-grid td.sbs-cell[data-method='{FAILS}']"
    wait(lambda d: d.find_elements(By.CSS_SELECTOR, f"{cell} img"), "no column for the failing method")
    assert BADGE in _text(driver, cell)
    assert driver.find_element(By.CSS_SELECTOR, f"{cell} .sanity-badge").get_attribute("title").startswith(
        "With every layer re-initialised")
    assert BADGE not in _text(driver, f"#sbs-grid td.sbs-cell[data-method='{PASSES}']")
    assert [e for e in (dash_duo.get_logs() or []) if e.get("level") == "SEVERE"] == []
