"""A real browser: JupyterLab headless on localhost, Debian's Chromium driven by Playwright, notebook 03 run
end to end, the explorer's layer slider moved, the figure checked to change, a screenshot saved.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``; Playwright's own browser download does not work
here) and ``pip install playwright``; without them the test is skipped and says why.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "03_attention_visualization.ipynb"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not found (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, server: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                json.load(response)
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on a free localhost port, serving a copy of notebook 03, with FGVC_SMOKE=1 for its kernel."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = _free_port(), secrets.token_hex(16)
    state = tmp_path / "jupyter"
    env = dict(
        os.environ, FGVC_SMOKE="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
        JUPYTERLAB_WORKSPACES_DIR=str(state / "workspaces"), JUPYTERLAB_SETTINGS_DIR=str(state / "settings"),
        JUPYTER_RUNTIME_DIR=str(state / "runtime"),
    )
    log = tmp_path / "jupyter.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [
                sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
                f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.port_retries=0",
                "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                *(["--allow-root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
            ],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
        )
    try:
        _wait_for_server(f"http://127.0.0.1:{port}/api/status?token={token}", server, log)
        yield f"http://127.0.0.1:{port}", token, log
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_notebook_03_runs_in_jupyterlab_and_the_layer_slider_redraws_the_explorer(request, tmp_path, capsys):
    missing = _missing()
    if missing:
        with capsys.disabled():  # printed even when pytest captures output
            print(f"\nbrowser test skipped: {missing}")
        pytest.skip(missing)
    lab = request.getfixturevalue("lab")
    base, token, log = lab
    from playwright.sync_api import sync_playwright

    screenshot = tmp_path / "notebook03_explorer.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}", wait_until="domcontentloaded")
            # the kernel is up when the status bar says "Python 3 (ipykernel) | Idle"
            page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(timeout=90_000)
            no_news = page.locator(".jp-toast-button", has_text="No")  # JupyterLab's news question, if asked
            if no_news.count():
                no_news.first.click()
            # Run > Run All Cells
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            explorer = page.locator(".fgvc-explorer")
            explorer.wait_for(state="visible", timeout=200_000)
            image = explorer.locator(".widget-image").first
            image.wait_for(state="visible", timeout=30_000)
            explorer.scroll_into_view_if_needed()
            before_src = image.get_attribute("src")
            before_label = explorer.locator(".fgvc-info").inner_text()

            # move the layer slider one step left (it starts on the last layer) with the keyboard
            slider = explorer.locator(".widget-slider", has=page.locator("label", has_text="layer")).first
            readout = slider.locator(".widget-readout")
            before_layer = readout.inner_text().strip()
            slider.locator(".noUi-handle").first.focus()
            page.keyboard.press("ArrowLeft")
            page.wait_for_function(
                "([img, src]) => img.getAttribute('src') !== src",
                arg=[image.element_handle(), before_src],
                timeout=60_000,
            )
            after_layer = readout.inner_text().strip()
            page.wait_for_timeout(500)
            explorer.screenshot(path=str(screenshot))
            # let the last cells finish, then look for errors anywhere in the notebook
            page.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(timeout=60_000)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t]
        finally:
            browser.close()
    with capsys.disabled():
        print(f"\nbrowser test screenshot: {screenshot}")
    assert before_layer != after_layer, (before_layer, after_layer)
    assert before_label  # the top-5 / true-label panel was there
    assert not tracebacks, tracebacks[:1]
