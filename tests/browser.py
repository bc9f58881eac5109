"""Headless Chromium for the browser tests: offline, with what a page requested and logged read back.

with offline_chromium() as driver:
    open_page(driver, path)          # fails if the page's script did not finish drawing
    ...                              # drive it with Selenium
    assert_offline_and_clean(driver, path)
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

# Belt and braces: DevTools says "offline", a proxy that does not exist catches anything that
# ignores it, and host names resolve to nothing; Chromium's own background traffic is off.
_OFFLINE_FLAGS = [
    "--headless=new",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--proxy-server=127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def offline_chromium(width: int = 1400, height: int = 1000) -> Iterator[webdriver.Chrome]:
    """A headless Chromium WebDriver that cannot reach any network, quit on leaving the block.

    Fails the test (it does not skip it) when Chromium or chromedriver is missing.
    """
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not found: apt-get install -y chromium chromium-driver", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*_OFFLINE_FLAGS, f"--window-size={width},{height}"]:
        options.add_argument(flag)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to start as root with its sandbox
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # A driver path given here keeps Selenium Manager (which would download one) out of it.
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
        )
        yield driver
    finally:
        driver.quit()


def open_page(driver: webdriver.Chrome, path: str | Path) -> None:
    """Open the HTML file at `path` and wait until its script has drawn it (`body[data-ready]`).

    Drains the request and console logs first, so that later checks see this page's entries only.
    """
    requested_urls(driver)
    console_errors(driver)
    driver.get(Path(path).resolve().as_uri())
    ready = WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready"))
    assert ready == "true", f"the page failed to draw: {console_errors(driver)}"


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    """URLs the browser asked for since the last call (DevTools' requestWillBeSent events)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def console_errors(driver: webdriver.Chrome) -> list[str]:
    """SEVERE console entries since the last call: errors, uncaught exceptions, blocked loads."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def assert_offline_and_clean(driver: webdriver.Chrome, path: str | Path) -> None:
    """Assert the page requested nothing but its own file and logged no console error."""
    own = Path(path).resolve().as_uri()
    others = [url for url in requested_urls(driver) if url != own]
    assert not others, f"the page made requests: {others}"
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")
    assert not resources, f"the page loaded resources: {resources}"
    assert not console_errors(driver), "console errors"


def by_testid(driver_or_element, testid: str) -> list[WebElement]:
    """Elements with `data-testid=testid` under the driver's page or an element."""
    return driver_or_element.find_elements("css selector", f'[data-testid="{testid}"]')


def hover(driver: webdriver.Chrome, element: WebElement) -> None:
    """Scroll `element` to the middle of the window and move the pointer onto it."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'})", element)
    ActionChains(driver).move_to_element(element).perform()


def click(driver: webdriver.Chrome, element: WebElement) -> None:
    """Scroll `element` to the middle of the window (clear of the sticky controls) and click it."""
    driver.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'})", element)
    element.click()


def drawn_lines(driver: webdriver.Chrome, panel: int = 0) -> list[tuple[int, int, int, float]]:
    """(query, key, head, weight) of every head-view line shown (not hidden by CSS) in run panel `panel`."""
    return [
        tuple(line)
        for line in driver.execute_script(
            """
            const svg = document.querySelectorAll('[data-testid="run-panel"]')[arguments[0]]
                .querySelector('[data-testid="head-view"]');
            return [...svg.querySelectorAll('line')]
                .filter(line => getComputedStyle(line).display !== 'none')
                .map(line => [+line.dataset.query, +line.dataset.key, +line.dataset.head, +line.dataset.weight]);
            """,
            panel,
        )
    ]
