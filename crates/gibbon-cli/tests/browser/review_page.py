"""Drives the guard's reviewer page in headless Chromium (Selenium + Debian's chromedriver).

usage: review_page.py URL TOKEN ITEM_ID LABEL NOTE
Opens URL/review: the sign-in form, no items. A wrong token is refused; the right one opens a
session (an HttpOnly cookie the page's script cannot read) and shows the queue. Waits for the row
of ITEM_ID with its picture, types NOTE, clicks the LABEL button and waits until the row says it
was decided; then signs out and checks the page asks to sign in again. Exits non-zero with a
message on any failure.
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
        # Not signed in: the sign-in form, no queue.
        assert driver.find_elements(By.ID, "token"), driver.page_source[:300]
        assert not driver.find_elements(By.ID, "items"), "queue shown before sign-in"
        # A wrong token is refused and shows no items.
        driver.find_element(By.ID, "token").send_keys("wrong-token-0000000000")
        driver.find_element(By.ID, "load").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "status"), "Token refused"))
        assert not driver.find_elements(By.ID, "items"), "queue shown for a wrong token"
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "load").click()
        row = wait.until(EC.presence_of_element_located((By.ID, "item-" + item_id)))
        cookies = driver.execute_script("return document.cookie")
        assert "gibbon_review_session" not in cookies, "the session cookie is readable by script"
        assert token not in driver.page_source, "the token is in the page"
        # The picture loads (a blob URL with a decoded image).
        wait.until(lambda d: d.execute_script(
            "const i = arguments[0].querySelector('img'); return i.complete && i.naturalWidth === 28;", row))
        assert "escalate" in row.text, row.text
        row.find_element(By.CSS_SELECTOR, "input.note").send_keys(note)
        row.find_element(By.CSS_SELECTOR, "button.label-" + label).click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "item-" + item_id), "decided: " + label + " by alice"))
        # Signing out ends the session: the page asks to sign in again.
        driver.find_element(By.ID, "signout").click()
        wait.until(EC.presence_of_element_located((By.ID, "token")))
        driver.get(url + "/review")
        assert driver.find_elements(By.ID, "token") and not driver.find_elements(By.ID, "items")
        print("decided", item_id, "as", label)
    finally:
        driver.quit()


if __name__ == "__main__":
    main()
