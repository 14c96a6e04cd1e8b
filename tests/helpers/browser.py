"""Headless Debian Chromium driven by Playwright, for checks of the real web UIs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

from tests.helpers.paths import REPO

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
# Without the background-networking flags Chromium keeps dialling out of this closed network.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def ensure_chromium() -> Path:
    if not CHROMIUM.exists():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise RuntimeError("Debian's chromium is required: apt-get install chromium")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=True,
                       capture_output=True)
    return CHROMIUM


@contextmanager
def browser_page(http_credentials: tuple[str, str] | None = None):
    """A page; `http_credentials` answer HTTP basic-auth challenges (MLflow's login)."""
    from playwright.sync_api import sync_playwright

    ensure_chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=FLAGS)
        try:
            options = {"viewport": {"width": 1400, "height": 900}}
            if http_credentials:
                username, password = http_credentials
                options["http_credentials"] = {"username": username, "password": password}
            yield browser.new_context(**options).new_page()
        finally:
            browser.close()


def mlflow_refuses_anonymous_browsing(url: str) -> bool:
    """The MLflow UI answers a browser without credentials with 401 (Chromium, with no one to
    ask for a login, reports ERR_INVALID_AUTH_CREDENTIALS)."""
    from playwright.sync_api import Error

    with browser_page() as page:
        try:
            response = page.goto(f"{url}/")
        except Error as exc:
            return "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
        return response is not None and response.status == 401


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def airflow_login(page, url: str, password: str) -> None:
    page.goto(f"{url}/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"), timeout=30_000)
