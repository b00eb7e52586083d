"""A real browser for the deployment journeys: Debian's Chromium, headless, driven by Selenium
through Debian's chromedriver. The webmail and the mailing lists' pages are tested in it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

BASE = "https://localhost"  # the webmail `make up` serves

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


# A page that reloads while a condition reads it leaves stale elements: read again, next poll.
PAGE_CHANGING = (NoSuchElementException, StaleElementReferenceException)


def wait(driver: WebDriver, condition: Callable[[Any], Any], timeout: float = 30) -> Any:
    return WebDriverWait(driver, timeout, ignored_exceptions=PAGE_CHANGING).until(condition)


# --- what a member does in Roundcube --------------------------------------------------------------


def login(driver: WebDriver, user: str, password: str, base: str = BASE) -> None:
    driver.get(base + "/")
    wait(driver, ec.visibility_of_element_located((By.ID, "rcmloginuser"))).send_keys(user)
    driver.find_element(By.ID, "rcmloginpwd").send_keys(password)
    driver.find_element(By.ID, "rcmloginsubmit").click()


def logged_in(driver: WebDriver, user: str, password: str, base: str = BASE) -> None:
    login(driver, user, password, base)
    wait(driver, ec.presence_of_element_located((By.ID, "messagelist")))


def open_page(driver: WebDriver, url: str) -> None:
    """Load a Roundcube page and wait until its script is set up: a click before that
    toggles a control without sending the command behind it."""
    driver.get(url)
    wait(driver, lambda d: d.execute_script("return !!(window.rcmail && rcmail.loaded)"))


def compose(driver: WebDriver, to: list[str], subject: str, body: str, base: str = BASE) -> None:
    """Open a new message and fill in its recipients, subject and text."""
    driver.get(base + "/?_task=mail&_action=compose")
    try:
        recipient = wait(
            driver,
            ec.element_to_be_clickable((By.CSS_SELECTOR, "#compose_to .recipient-input input")),
        )
    except TimeoutException as exc:  # seen once in CI: say what the browser showed instead
        shown = f"{driver.current_url!r} titled {driver.title!r}, error {shown_error(driver)}"
        raise AssertionError(f"the compose page never became usable; browser at {shown}") from exc
    for address in to:
        recipient.send_keys(address + ",")
    driver.find_element(By.ID, "compose-subject").send_keys(subject)
    driver.find_element(By.ID, "composebody").send_keys(body)


def shown_error(driver: WebDriver) -> str | None:
    """The error Roundcube shows in its message stack, if any."""
    errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#messagestack div.error")]
    return errors[0] if errors else None


def attach(driver: WebDriver, path: Path) -> str | None:
    """Attach a file to the open message, as *Attach a file* does; None once it is attached,
    else the error Roundcube showed."""
    before = len(driver.find_elements(By.CSS_SELECTOR, "#attachment-list li:not(.uploading)"))
    field = driver.find_element(By.CSS_SELECTOR, "input[type=file][name='_attachments[]']")
    field.send_keys(str(path))

    def attached(d: WebDriver) -> bool:
        return len(d.find_elements(By.CSS_SELECTOR, "#attachment-list li:not(.uploading)")) > before

    wait(driver, lambda d: attached(d) or shown_error(d), timeout=120)
    return shown_error(driver)


def send_composed(driver: WebDriver) -> str | None:
    """Send the open message; None once Roundcube has left the compose page, else its error."""
    driver.find_element(By.CSS_SELECTOR, "button.send").click()
    wait(driver, lambda d: "_action=compose" not in d.current_url or shown_error(d), timeout=120)
    return shown_error(driver)


def compose_and_send(
    driver: WebDriver, to: list[str], subject: str, body: str, base: str = BASE
) -> None:
    compose(driver, to, subject, body, base)
    error = send_composed(driver)
    assert error is None, f"Roundcube did not send it: {error}"
