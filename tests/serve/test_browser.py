"""The lost-pet finder page in a real browser (headless Chromium driven by Selenium) against a real server:
a photo uploaded on the page brings the right pet's thumbnail first, and a new pet enrolled through the form
is found afterwards. At phone width nothing overflows. Skipped without Chromium unless PETKIT_BROWSER_TESTS=1."""

from __future__ import annotations

import json
import os
import urllib.request

from PIL import Image

from tests.report.test_browser import _driver
from tests.serve.server import Server


def near_copy(path, out):
    """The photo as a messenger forwards it: resized to 90 % and re-encoded (not the enrolled bytes)."""
    image = Image.open(path).convert("RGB")
    image.resize((int(image.width * 0.9), int(image.height * 0.9))).save(out, "JPEG", quality=80)
    return out


def test_identify_and_enrol_through_the_page(tiny_model, gallery_dir, pets_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = Server(tiny_model, gallery_dir, "--threshold", "0.9", log=tmp_path / "serve.log")
    driver = _driver(390, 844)
    try:
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: "pets registered" in d.find_element(By.ID, "status").text)
        assert driver.find_element(By.ID, "status").text.startswith("8 pets registered (24 photos)")
        pets = sorted(pets_dir.iterdir())
        query = near_copy(sorted(pets[6].iterdir())[1], tmp_path / "found.jpg")
        driver.find_element(By.ID, "identify-photos").send_keys(str(query))  # choosing the photo starts the search
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#matches .match"))
        first = driver.find_elements(By.CSS_SELECTOR, "#matches .match")[0]
        assert first.get_attribute("data-identity") == "pet_006"
        assert driver.find_element(By.ID, "decision").text.startswith("Likely pet_006")
        wait.until(lambda d: d.execute_script("return [...document.querySelectorAll('#matches img')].every(i => i.complete && i.naturalWidth > 0)"))
        driver.save_screenshot(str(tmp_path / "identify.png"))

        new = sorted(pets[0].iterdir())[3:5]  # pet_000's photos that are not enrolled, as a new pet
        driver.find_element(By.ID, "enrol-identity").send_keys("luna-7")
        driver.find_element(By.ID, "enrol-photos").send_keys("\n".join(str(p) for p in new))
        driver.find_element(By.ID, "enrol-button").click()
        status = lambda d: d.find_element(By.ID, "enrol-status")  # noqa: E731
        wait.until(lambda d: "Registered" in status(d).text or "error" in status(d).get_attribute("class"))
        assert driver.find_element(By.ID, "enrol-status").text == "Registered luna-7: 2 new photo(s)"
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("9 pets registered (26 photos)"))
        shown = json.loads(urllib.request.urlopen(server.url + "/v1/identities/luna-7").read())
        assert len(shown["photos"]) == 2

        driver.execute_script("document.getElementById('identify-photos').value = ''")  # Selenium adds to a multiple input's files
        driver.find_element(By.ID, "identify-photos").send_keys(str(near_copy(new[1], tmp_path / "found2.jpg")))
        wait.until(lambda d: d.find_element(By.ID, "decision").text.startswith(("Likely luna-7", "Not", "Likely pet_000")))
        assert driver.find_element(By.ID, "decision").text.startswith("Likely luna-7")
        assert driver.find_elements(By.CSS_SELECTOR, "#matches .match")[0].get_attribute("data-identity") == "luna-7"
        overflow = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than the phone"
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        if os.environ.get("PETKIT_SCREENSHOTS"):
            driver.save_screenshot(os.path.join(os.environ["PETKIT_SCREENSHOTS"], "serve-phone.png"))
    finally:
        driver.quit()
        server.stop()
