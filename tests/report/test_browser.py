"""The report in a real browser: headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium) opens report/index.html from disk at desktop and phone widths; every image has loaded,
the console is clean, nothing overflows the phone's width, and a screenshot is written.

Skipped where Chromium is not installed, except when PETKIT_BROWSER_TESTS=1 (set by .ci/run, which
installs Chromium): there a missing browser fails the test instead of hiding it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _driver(width: int, height: int):
    if not (CHROMIUM and DRIVER):
        if os.environ.get("PETKIT_BROWSER_TESTS") == "1":
            pytest.fail("PETKIT_BROWSER_TESTS=1 but chromium/chromedriver are not installed (apt-get install chromium chromium-driver)")
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver  # the dev extra
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", f"--window-size={width},{height}",
                 "--allow-file-access-from-files"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=options)  # the system driver: Selenium Manager never downloads


@pytest.mark.parametrize("width, height, name", [(1280, 1000, "desktop"), (390, 844, "phone")])
def test_the_report_renders_in_chromium(report, width, height, name, tmp_path):
    driver = _driver(width, height)
    try:
        driver.get(Path(report.index).resolve().as_uri())
        driver.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager'); window.scrollTo(0, document.body.scrollHeight);")
        driver.set_script_timeout(30)
        widths = driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "Promise.all([...document.images].map(i => i.complete ? 1 : new Promise(r => { i.onload = i.onerror = r; })))"
            ".then(() => done([...document.images].map(i => [i.getAttribute('src'), i.naturalWidth])));")
        assert len(widths) == len(report.figures)
        assert all(width > 0 for _, width in widths), [src for src, width in widths if not width]
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name}: the page is {overflow} px wider than the window"
        driver.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / f"report-{name}.png"
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        driver.quit()
