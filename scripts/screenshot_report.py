"""Screenshot a report page in headless Chromium (Debian's chromium + chromium-driver):
python scripts/screenshot_report.py REPORT_DIR OUT.png [HEIGHT]"""

import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

report, out = Path(sys.argv[1]), Path(sys.argv[2])
height = int(sys.argv[3]) if len(sys.argv) > 3 else 2400
options = webdriver.ChromeOptions()
for arg in (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    f"--window-size=1200,{height}",
):
    options.add_argument(arg)
options.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    driver.get((report / "report.html").resolve().as_uri())
    driver.save_screenshot(str(out))
    print(f"wrote {out}; page height {driver.execute_script('return document.body.scrollHeight')} px")
finally:
    driver.quit()
