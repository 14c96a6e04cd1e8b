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



def click_extra_link(page, details_url: str, name: str, href: str):
    """On a task's Details tab, the extra link `name` points at `href`; clicking it opens the
    target in a new tab (the UI's own rule for other origins). The opened page (closed if the
    target was a download) and the answer to its navigation, after any login challenge."""
    page.goto(details_url)
    link = page.get_by_role("link", name=name)
    link.wait_for(timeout=60_000)
    assert link.get_attribute("href") == href, (name, link.get_attribute("href"), href)
    target = href.split("#")[0]
    with page.context.expect_page() as new_tab, page.context.expect_event(
            "response", lambda answer: answer.url == target and answer.status != 401
    ) as navigation:
        link.click()
    from playwright.sync_api import Error

    opened, answer = new_tab.value, navigation.value
    assert answer.status == 200, (name, href, answer.status)
    try:
        opened.wait_for_load_state()
    except Error:
        # Not a page: Chromium downloads it (the registry's manifest is JSON of its own media
        # type) and closes the tab. The answer above is what was reached.
        assert opened.is_closed(), (name, href)
    return opened, answer


def failed_runs_in_the_ui(url: str, password: str, run_id: str, shipped: str,
                          dag_id: str = "rice_classifier_cicd") -> None:
    """What a person sees of a failed run in the Airflow UI: listed by the runs page's failed
    filter (a shipped run is not), `Failed` in its own page's header, and its bar in the DAG's
    grid red where the shipped run's is not."""
    with browser_page() as page:
        airflow_login(page, url, password)
        page.goto(f"{url}/dags/{dag_id}/runs?state=failed")
        page.get_by_text(run_id).first.wait_for(timeout=60_000)
        text = page.inner_text("body")
        assert shipped not in text, text[-2000:]
        page.goto(f"{url}/dags/{dag_id}/runs/{run_id}")
        header = page.get_by_test_id("header-card").first
        header.wait_for(timeout=60_000)
        assert "Failed" in header.inner_text().splitlines(), header.inner_text()
        page.goto(f"{url}/dags/{dag_id}")
        page.locator(f'a[href$="/runs/{run_id}/"]').first.wait_for(timeout=60_000)
        hues = {run: bar_hue(page, run) for run in (run_id, shipped)}
        assert _red(hues[run_id]) and not _red(hues[shipped]), hues
        assert screenshot(page, f"airflow-failed-{run_id}.png").stat().st_size > 10_000


def bar_hue(page, run_id: str) -> float | None:
    """The hue (OKLCH degrees) of a run's bar in the grid of the page shown: the UI draws it
    as a gradient of its state's colour."""
    painted = page.evaluate("""(id) => {
        const bar = document.querySelector(`a[href$="/runs/${CSS.escape(id)}/"] > div`);
        return bar ? getComputedStyle(bar).backgroundImage : null; }""", run_id)
    found = re.search(r"oklch\(([\d.]+) ([\d.]+) ([\d.]+)", painted or "")
    return float(found[3]) if found and float(found[2]) > 0.1 else None


def _red(hue: float | None) -> bool:
    return hue is not None and (hue < 45 or hue > 330)
