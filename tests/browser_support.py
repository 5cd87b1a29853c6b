"""Browser-test plumbing: a real `gestaltlens serve` subprocess (embedded defaults: SQLite, data dir, inline
jobs) and Debian's Chromium driven by Playwright, shared by every browser test module."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

CHROMIUM = os.environ.get("GESTALTLENS_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
PASSWORD = "browser test password"
#: The bound of every wait for a state (server up, a page, an element, a saved rating). Waits end as soon as
#: the state is reached, so a generous bound costs nothing on an idle machine; on a 2-core machine at load
#: 10-30 a server start alone took over 60 s (issue 20). GESTALTLENS_TEST_WAIT_S overrides it.
WAIT_S = float(os.environ.get("GESTALTLENS_TEST_WAIT_S", "180"))
#: The bound for a computation seen through the page (a panel of maps, a cohort's maps, an evaluation): the same
#: kind of bound, larger because the work is (a ten-method cohort took over 15 minutes at load 40, issue 22).
JOB_WAIT_S = 15 * WAIT_S


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / "server.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GESTALTLENS_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
        env.pop("GESTALTLENS_DATABASE_URL", None)
        self._log_handle = self.log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=self._log_handle, stderr=subprocess.STDOUT,
        )
        # A bound, not a timing: the server is waited for until it answers (on a 2-core machine at load 20+
        # its start-up, importing torch and migrating, took over a minute).
        deadline = time.monotonic() + max(300.0, WAIT_S)
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()  # never leave a server running behind a failed start
        raise RuntimeError("server did not start:\n" + self.log.read_text())

    def setup_code(self) -> str:
        match = re.search(r"setup code: ([0-9A-F-]{20})", self.log.read_text())
        assert match, self.log.read_text()
        return match.group(1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log_handle.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "data")
    yield running
    running.stop()


@pytest.fixture
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        from playwright.sync_api import expect

        expect.set_options(timeout=WAIT_S * 1000)  # expect(...) waits for a state up to the bound
        original = instance.new_context

        def new_context(*args, **kwargs):  # every page waits (goto, wait_for, click) up to the bound
            context = original(*args, **kwargs)
            context.set_default_timeout(WAIT_S * 1000)
            context.set_default_navigation_timeout(WAIT_S * 1000)
            return context

        instance.new_context = new_context
        def new_page(*args, **kwargs):  # Browser.new_page makes its context inside Playwright, past the patch
            context = new_context(*args, **kwargs)
            page = context.new_page()
            page.once("close", lambda _page: context.close())  # the page owns its context, as Playwright's does
            return page

        instance.new_page = new_page
        yield instance
        instance.close()


def first_run_setup(page, server: Server) -> None:
    page.goto(server.url + "/login")
    page.wait_for_url(re.compile(r"/setup$"))
    assert "not a diagnostic device" in page.content()
    page.fill("input[name=code]", server.setup_code())
    page.fill("input[name=username]", "dr-admin")
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password_repeat]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/cases$"))


def upload_photo(page, server: Server, photo: Path, pseudonym: str | None = None) -> str:
    """Upload ``photo`` through the New case page as a clinician does; the new case's id (its page is open)."""
    page.goto(server.url + "/cases/new")
    page.set_input_files("#photo-input", str(photo))
    if pseudonym is not None:
        page.fill("#pseudonym", pseudonym)
    page.click("#upload-button")
    page.wait_for_url(re.compile(r"/cases/[0-9a-f]{32}$"))
    return page.url.rsplit("/", 1)[1]


def watch(page, problems: list[str]) -> None:
    """Collect the page's console errors and uncaught exceptions (a CSP violation is a console error)."""
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))


def log_in(browser, server: Server, username: str, problems: list[str]):
    """A fresh browser context logged in as ``username`` (password :data:`PASSWORD`), on the case list."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    watch(page, problems)
    page.goto(server.url + "/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/cases$"))
    return page


def wait_js(page, expression: str, timeout_s: float = WAIT_S) -> None:
    """Poll a JS expression until it is truthy. Not Playwright's ``wait_for_function`` with an expression string:
    once the first check fails it polls with ``eval`` inside the page, which our CSP forbids (CI: an EvalError
    whenever the state was not there at the first look); ``page.evaluate`` is not bound by the page's CSP."""
    import time

    deadline = time.monotonic() + timeout_s
    while not page.evaluate(f"() => Boolean({expression})"):
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {expression}"
        time.sleep(0.1)


def wait_job(page, server: Server, job_id: str, timeout_s: float = JOB_WAIT_S) -> dict:
    """Poll the job through the API (the page's own session) until it has finished; its last state."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = page.request.get(f"{server.url}/api/v1/jobs/{job_id}").json()
        if job["state"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['state']} after {timeout_s:.0f} s"
        time.sleep(0.5)
