"""The page in a real headless Chromium: make a task from the example photos, classify photos dropped, chosen
and snapped with a (fake) webcam, see a server error inline, remove a class, make a fine-tuned task; and the
fine-tuning checkbox of a model that cannot fine-tune.

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); skipped, saying so, where
they are missing. ``FEWSHOT_PAGE_SCREENSHOT=path.png`` also saves the page after the first answer
(how ``docs/serve_page.png`` was made).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
    pytest.skip(
        "no browser: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")

import uvicorn  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from fewshot_sdk.serve.app import create_app  # noqa: E402
from fewshot_sdk.serve.settings import ServeSettings  # noqa: E402

DROP = """
const [files, target] = [arguments[0].files, document.querySelector(arguments[1])];
const transfer = new DataTransfer();
for (const file of files) transfer.items.add(file);
target.dispatchEvent(new DragEvent("dragover", {bubbles: true, cancelable: true, dataTransfer: transfer}));
target.dispatchEvent(new DragEvent("drop", {bubbles: true, cancelable: true, dataTransfer: transfer}));
"""

FILE_INPUT = "const i = document.createElement('input'); i.type = 'file'; document.body.append(i); return i;"


@contextlib.contextmanager
def served_here(learner, tasks: Path, port: int, **settings) -> Iterator[str]:
    """The service over ``tasks`` in a thread of this process, with ``learner`` (named ``model=``), on ``port``."""
    app = create_app(ServeSettings(tasks=tasks, **settings), learner=learner)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture()
def page_url(learner, tmp_path, free_port):
    """The service in a thread of this process (sharing the session's learner), on a free loopback port."""
    with served_here(learner, tmp_path / "tasks", free_port) as url:
        yield url


def first_photo_each(browser, photos, names: list[str]) -> None:
    """Names the page's class boxes ``names`` and gives each the first example photo of that class."""
    for box, name in zip(browser.find_elements(By.CSS_SELECTOR, ".class-box"), names, strict=True):
        box.find_element(By.CSS_SELECTOR, ".class-name").send_keys(name)
        first = sorted((photos.support_dir / name).iterdir())[0]
        box.find_element(By.CSS_SELECTOR, ".class-files").send_keys(str(first))


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.fixture()
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--window-size=1100,1400",
        "--use-fake-ui-for-media-stream",  # the webcam: allowed without asking, a generated picture
        "--use-fake-device-for-media-stream",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def text_of(driver, selector: str, contains: str = "", timeout: float = 60) -> str:
    """The element's text once it holds ``contains`` (any text when empty)."""

    def ready(d):
        text = d.find_element(By.CSS_SELECTOR, selector).text
        return text if text and contains in text else False

    try:
        return WebDriverWait(driver, timeout).until(ready)
    except Exception:
        errors = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".error") if e.text]
        raise AssertionError(f"{selector} never showed {contains!r}; errors on the page: {errors}") from None


def test_the_page_teaches_classes_and_classifies_photos(page_url, browser, photos):
    browser.get(page_url)
    text_of(browser, "#model-line", "protonet-photos")

    # one class box per example class: name typed, photos given to its file input
    add_box = browser.find_element(By.ID, "add-box")
    for _ in range(len(photos.classes) - 2):
        add_box.click()
    boxes = browser.find_elements(By.CSS_SELECTOR, ".class-box")
    assert len(boxes) == len(photos.classes)
    for box, name in zip(boxes, photos.classes, strict=True):
        box.find_element(By.CSS_SELECTOR, ".class-name").send_keys(name)
        paths = sorted(str(p) for p in (photos.support_dir / name).iterdir())
        box.find_element(By.CSS_SELECTOR, ".class-files").send_keys("\n".join(paths))
    assert len(boxes[0].find_elements(By.CSS_SELECTOR, ".thumbs img")) == 5
    browser.find_element(By.ID, "create-task").click()
    assert "fine-tuned" not in text_of(browser, "#teach-status", "Created task")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#task-classes li")) == 5
    assert "not fine-tuned" in text_of(browser, "#task-summary", "classes")

    # a photo chosen with the file input
    browser.find_element(By.ID, "query-files").send_keys(str(photos.queries_dir / "panda_0020.jpg"))
    assert text_of(browser, "#answer", "panda").startswith("panda (")
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars li")
    assert len(bars) == 5 and bars[0].text.startswith("panda")
    if os.environ.get("FEWSHOT_PAGE_SCREENSHOT"):
        height = browser.execute_script("return document.documentElement.scrollHeight")
        metrics = {"width": 1000, "height": height, "deviceScaleFactor": 1, "mobile": False}
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)  # the whole page, no scroll bar
        browser.save_screenshot(os.environ["FEWSHOT_PAGE_SCREENSHOT"])
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    # a photo dropped on the drop zone (a real DataTransfer holding the file, as a drag from the desktop)
    helper = browser.execute_script(FILE_INPUT)
    helper.send_keys(str(photos.queries_dir / "flamingo_0020.jpg"))
    browser.execute_script(DROP, helper, "#query-drop")
    assert text_of(browser, "#answer", "flamingo").startswith("flamingo (")

    # a webcam snapshot (Chromium's generated picture): an answer with every class's bar
    browser.find_element(By.ID, "camera-start").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_element(By.ID, "camera-snap").is_enabled())
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.getElementById('camera').videoWidth"))
    browser.execute_script("document.getElementById('answer').textContent = ''")
    browser.find_element(By.ID, "camera-snap").click()
    text_of(browser, "#answer")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#bars li")) == 5

    # the server's own words, inline: adding a class the task already has
    box = browser.find_elements(By.CSS_SELECTOR, ".class-box")[0]
    box.find_element(By.CSS_SELECTOR, ".class-name").send_keys("panda")
    box.find_element(By.CSS_SELECTOR, ".class-files").send_keys(str(photos.queries_dir / "panda_0020.jpg"))
    browser.find_element(By.ID, "add-to-task").click()
    assert "already has classes ['panda']" in text_of(browser, "#teach-error", "already")

    # removing a class with the keyboard
    remove = browser.find_element(By.CSS_SELECTOR, "button[aria-label='Remove class pizza']")
    remove.send_keys("\n")
    WebDriverWait(browser, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#task-classes li")) == 4)
    assert "pizza" not in browser.find_element(By.ID, "task-classes").text

    # a fine-tuned task (one photo a class: the smallest fine-tuning, about a second on a CPU)
    browser.get(page_url)
    text_of(browser, "#model-line", "protonet-photos")
    assert get_json(f"{page_url}/healthz")["finetune"] is True
    finetune = browser.find_element(By.ID, "finetune")
    assert finetune.is_enabled() and not finetune.is_selected()
    finetune.click()
    first_photo_each(browser, photos, ["flamingo", "laptop"])
    create = browser.find_element(By.ID, "create-task")
    # the status set by the click itself, before the request is answered
    status = browser.execute_script(
        "arguments[0].click(); return document.getElementById('teach-status').textContent", create
    )
    assert "fine-tuning" in status
    assert "fine-tuned on its photos" in text_of(browser, "#teach-status", "Created task")
    task_id = browser.find_element(By.ID, "task-select").get_attribute("value")
    assert get_json(f"{page_url}/tasks/{task_id}")["adapt_options"] == {"finetune": "auto"}
    assert "fine-tuned on its photos" in text_of(browser, "#task-summary", "2 classes")


def test_a_model_that_cannot_fine_tune_disables_the_checkbox_and_its_refusal_shows(
    browser, photos, tmp_path, free_port
):
    import fewshot_sdk as fs

    with served_here(fs.create("mann"), tmp_path / "tasks", free_port, model="mann") as url:
        assert get_json(f"{url}/healthz")["finetune"] is False
        browser.get(url)
        text_of(browser, "#model-line", "mann")
        assert "cannot fine-tune" in text_of(browser, "#finetune-off", "mann")
        assert not browser.find_element(By.ID, "finetune").is_enabled()

        # a page that was not told (a server that does not say) sends the request: the server's own words show
        browser.execute_script(
            "const box = document.getElementById('finetune'); box.disabled = false; box.checked = true;"
        )
        first_photo_each(browser, photos, ["flamingo", "laptop"])
        browser.find_element(By.ID, "create-task").click()
        error = text_of(browser, "#teach-error", "finetune")
        assert error == "mann adapt options: unknown ['finetune']; mann takes no options"
        assert browser.find_element(By.ID, "teach-status").text == ""
