"""A real browser for the deployment journeys: Debian's Chromium, headless, driven by Selenium
through Debian's chromedriver. The webmail and the mailing lists' pages are tested in it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",  # no internet here: no update or sync calls
    "--disable-component-update",
    "--disable-sync",
    "--ignore-certificate-errors",  # the stack's self-signed certificate
    "--window-size=1400,1000",
]


@pytest.fixture
def browser(deployed: dict[str, Any]) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, condition: Callable[[Any], Any], timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout).until(condition)
