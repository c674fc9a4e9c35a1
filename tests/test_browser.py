"""The attention explorer in a real browser: JupyterLab + headless Chromium (issue 6.4).

Unit tests drive the widgets from Python; only a browser shows that the front end
renders them and sends a changed control back to the kernel. The test starts
JupyterLab on 127.0.0.1 with a token in a temporary root, writes a small demo
notebook (a tiny random model; the course notebook comes later), runs it through
the Lab menu, changes the head dropdown and checks that the heat map image changed.
A screenshot goes to the test's temporary folder; with ``REFTX_UPDATE_SCREENSHOT=1`` the demo notebook
shows the trained SAMSum baseline of the ``full`` budget instead (its finished checkpoint must exist:
run notebook 02 at ``full`` first) and the screenshot replaces ``figures/exp3_explorer_browser.png``,
so running the tests never changes a committed file and the committed picture shows a course model.

Needs Debian's ``chromium`` (``apt-get install chromium``): ``playwright install``
cannot download a browser here, so Playwright drives ``/usr/bin/chromium``.

Duration, measured on the course's 2-core CPU machine: about 20 s on quiet cores
(JupyterLab answers in ~3 s, opening the notebook and starting its kernel ~6 s,
running the cells ~7 s, mostly importing torch and transformers in the fresh kernel,
changing the head < 1 s) and up to about 60 s on a loaded machine or with cold
caches. ``pytest -s tests/test_browser.py`` prints the measured stages.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO / "figures" / "exp3_explorer_browser.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 120_000  # generous: the first run imports torch and transformers in a fresh kernel

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium)",
)

DEMO_SETUP = """\
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from reftx_lib import ReferenceTransformer
from reftx_lib.attention.explorer import AttentionExplorer

texts = ["Amanda: I baked cookies. Do you want some?\\nJerry: Sure!", "Amanda will bring Jerry cookies.",
         "the cat sat on the mat. the dog sat on the log."]
bpe = Tokenizer(models.BPE())
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
bpe.train_from_iterator(texts, trainer=trainers.BpeTrainer(
    vocab_size=300, special_tokens=["<pad>", "<bos>", "<eos>", "<sep>"],
    initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<bos>",
                              eos_token="<eos>", sep_token="<sep>")

torch.manual_seed(0)
model = ReferenceTransformer(vocab_size=len(tok), d_model=32, n_layers=2, n_heads=2, dropout=0.0, max_len=128)
with torch.no_grad():  # sharpen the random attention so the heat maps show structure
    for name, p in model.named_parameters():
        if "attn." in name and "proj" in name and "out_proj" not in name and name.endswith("weight"):
            p.mul_(15)
ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]
rows = [ids(texts[0]) + [3] + ids(texts[1]) + [2], ids(texts[2]) + [3] + ids(texts[1]) + [2]]
"""
DEMO_EXPLORER = """\
# NBVAL_IGNORE_OUTPUT
explorer = AttentionExplorer({"tiny random model": (model, rows, tok)})
explorer.widget
"""
# The screenshot's setup: the course's trained SAMSum baseline (full budget) on three test dialogues.
TRAINED_SETUP = """\
from reftx_lib.attention.explorer import AttentionExplorer
from course.experiments import samsum_baseline
from course.budgets import get_budget
from reftx_lib.data.tokenizer import load_tokenizer

settings = get_budget("full")
tok = load_tokenizer(settings["data"]["vocab_size"])
course = samsum_baseline("full", settings, tok)
history = course.fit()  # the finished checkpoint: loaded, not trained
model, rows = course.model.eval(), course.data["test"]["input_ids"][:3]
"""
TRAINED_EXPLORER = """\
# NBVAL_IGNORE_OUTPUT
explorer = AttentionExplorer({f"SAMSum baseline (full budget, {len(history)} steps)": (model, rows, tok)})
explorer.widget
"""


def write_demo_notebook(path: Path, trained: bool = False) -> Path:
    """A two-cell notebook that builds an ``AttentionExplorer`` on a tiny random encoder-decoder, or with
    ``trained`` on the course's trained SAMSum baseline."""
    nb = nbformat.v4.new_notebook()
    setup, explorer = (TRAINED_SETUP, TRAINED_EXPLORER) if trained else (DEMO_SETUP, DEMO_EXPLORER)
    nb.cells = [nbformat.v4.new_code_cell(setup), nbformat.v4.new_code_cell(explorer)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, token: str, path: str, method: str = "GET", body: dict | None = None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.read()


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server in ``tmp_path/root`` with the demo notebook; always shut down afterwards.

    Config, runtime, settings and workspace folders live in ``tmp_path`` so neither the
    user's setup nor a stale workspace changes what the browser sees.
    """
    root = tmp_path / "root"
    root.mkdir()
    trained = os.environ.get("REFTX_UPDATE_SCREENSHOT") == "1"
    if trained and not (REPO / "checkpoints" / "full" / "samsum-baseline" / "last.pt").is_file():
        pytest.fail(
            "REFTX_UPDATE_SCREENSHOT=1 needs the full SAMSum baseline: run notebook 02 at --budget full"
        )
    write_demo_notebook(root / "demo.ipynb", trained=trained)
    settings = {  # no news toast over the screenshot; no "Select Kernel" dialog when kernelspecs load late
        "apputils-extension/notification": {"fetchNews": "false"},
        "notebook-extension/tracker": {"autoStartDefaultKernel": True},
    }
    for name, values in settings.items():
        path = tmp_path / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "HF_HUB_OFFLINE": "1",
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    env.pop("MPLBACKEND", None)  # the kernel must use the inline backend to render the heat map
    log = open(tmp_path / "jupyterlab.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.allow_root=True",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ],  # (ServerApp.token is deprecated)
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        start = time.perf_counter()
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"JupyterLab exited with code {proc.returncode}:\n"
                    f"{(tmp_path / 'jupyterlab.log').read_text()}"
                )
            try:
                json.loads(_api(url, token, "/api/status"))
                break
            except OSError:
                if time.perf_counter() - start > 60:
                    pytest.fail(
                        f"JupyterLab did not answer within 60 s:\n{(tmp_path / 'jupyterlab.log').read_text()}"
                    )
                time.sleep(0.25)
        print(f"\nJupyterLab ready in {time.perf_counter() - start:.1f} s")
        # A session made up front means Lab opens the notebook on a running kernel, with no "Select Kernel"
        # dialog.
        _api(
            url,
            token,
            "/api/sessions",
            "POST",
            {"path": "demo.ipynb", "type": "notebook", "name": "demo.ipynb", "kernel": {"name": "python3"}},
        )
        yield {"url": url, "token": token, "log": tmp_path / "jupyterlab.log"}
    finally:
        _stop(proc, url, token)
        log.close()


def _stop(proc: subprocess.Popen, url: str, token: str) -> None:
    """Shut the server down through its API (which also stops kernels), then by signal if needed."""
    try:
        _api(url, token, "/api/shutdown", method="POST")
        proc.wait(timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                break
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass


def _run_all_cells(page, timeout_error: type[Exception]) -> None:
    """Run > Run All Cells, and once more if it was dropped (a kernel restarting right after load drops it,
    sometimes after the first cell has run).

    A queued or running cell shows ``[*]`` instead of ``[ ]`` in its prompt, so no prompt may still show it.
    """
    for _ in range(3):
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        try:
            page.wait_for_function(
                "() => ![...document.querySelectorAll('.jp-Notebook .jp-InputPrompt')]"
                ".some(prompt => prompt.textContent.includes('[ ]'))",
                timeout=15_000,
            )
            return
        except timeout_error:
            page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
    pytest.fail("JupyterLab never started running the cells")


def _heat_map_src(page) -> str:
    return page.locator(".widget-output img").first.get_attribute("src")


def test_explorer_in_jupyterlab(jupyterlab, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    timings = {}
    start = time.perf_counter()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            # Should a dialog (e.g. "Select Kernel") still cover the page, accept it before the next action.
            page.add_locator_handler(
                page.locator(".jp-Dialog"), lambda d: d.locator(".jp-mod-accept").click()
            )
            page.goto(f"{jupyterlab['url']}/lab/tree/demo.ipynb?token={jupyterlab['token']}")
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]')  # kernel started
            timings["open notebook"] = time.perf_counter() - start

            t = time.perf_counter()
            _run_all_cells(page, sync_api.TimeoutError)
            page.wait_for_selector(".widget-output img")  # the explorer drew its first heat map
            page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
            timings["run cells"] = time.perf_counter() - t
            before = _heat_map_src(page)
            assert before.startswith("data:image/png;base64,")

            t = time.perf_counter()
            head = page.locator(".widget-dropdown").filter(has=page.locator("label", has_text="head"))
            head.locator("select").select_option(label="0")  # "average" -> head 0
            page.wait_for_function(
                "old => { const img = document.querySelector('.widget-output img');"
                " return img !== null && img.src !== old; }",
                arg=before,
            )
            timings["change head"] = time.perf_counter() - t
            after = _heat_map_src(page)
            assert after.startswith("data:image/png;base64,") and after != before
            assert "top 5 keys" in page.locator(".widget-html").first.inner_text()  # the top-k table

            page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]')
            page.locator(".widget-output img").first.scroll_into_view_if_needed()
            keep = os.environ.get("REFTX_UPDATE_SCREENSHOT") == "1"
            page.screenshot(path=str(SCREENSHOT if keep else tmp_path / SCREENSHOT.name))
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"failure screenshot: {tmp_path / 'failure.png'}; server log: {jupyterlab['log']}")
            raise
        finally:
            browser.close()
    timings["total"] = time.perf_counter() - start
    print("browser timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
