"""Drives the guard's reviewer page in headless Chromium (Selenium + Debian's chromedriver).

usage: review_page.py URL TOKEN ITEM_ID LABEL NOTE
Opens URL/review, checks the page shows nothing without the token, enters the token, waits
for the row of ITEM_ID with its picture, types NOTE, clicks the LABEL button and waits until
the row says it was decided. Exits non-zero with a message on any failure.
"""
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


def main():
    url, token, item_id, label, note = sys.argv[1:6]
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--user-data-dir=" + tempfile.mkdtemp()]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        wait = WebDriverWait(driver, 20)
        driver.get(url + "/review")
        # A wrong token shows no items.
        driver.find_element(By.ID, "token").send_keys("wrong-token-0000000000")
        driver.find_element(By.ID, "load").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "token refused"))
        assert not driver.find_elements(By.CSS_SELECTOR, "#items tbody tr"), "rows shown without a valid token"
        field = driver.find_element(By.ID, "token")
        field.clear()
        field.send_keys(token)
        driver.find_element(By.ID, "load").click()
        row = wait.until(EC.presence_of_element_located((By.ID, "item-" + item_id)))
        # The picture loads (a blob URL with a decoded image).
        wait.until(lambda d: d.execute_script(
            "const i = arguments[0].querySelector('img'); return i.complete && i.naturalWidth === 28;", row))
        assert "escalate" in row.text, row.text
        row.find_element(By.CSS_SELECTOR, "input.note").send_keys(note)
        row.find_element(By.CSS_SELECTOR, "button.label-" + label).click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "item-" + item_id), "decided: " + label + " by alice"))
        print("decided", item_id, "as", label)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
