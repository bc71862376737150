"""``dextr serve`` against Label Studio itself (slow; run with ``-m slow``).

Label Studio lives in its own cached virtual environment, never in dextr's dependencies; the
tests skip where it is absent. Make it once (Python >= 3.10, about 1 GB)::

    python3.11 -m venv ~/.cache/dextr-test-venvs/labelstudio
    ~/.cache/dextr-test-venvs/labelstudio/bin/pip install label-studio

(``$DEXTR_LABELSTUDIO_VENV`` points elsewhere.) The first test checks the brush RLE against the
SDK's decoder and encoder. The others share one Label Studio as it ships (legacy tokens off)
and one ``dextr serve --token`` given a personal access token in ``$LABEL_STUDIO_API_KEY``,
connected with Basic auth: four smart keypoints sent the way the browser sends them, then the
same four clicks in Label Studio's page in headless Chromium (Playwright; skipped without it).
``$DEXTR_LABELSTUDIO_MODEL`` names a model to use instead of the tiny random one (a trained
one makes a real mask); ``$DEXTR_SCREENSHOT=path.png`` keeps the page's screenshot.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest

from dextr_lib.formats.brush import brush_to_mask, decode_brush, mask_to_brush
from dextr_lib.serving.labelstudio import split_points
from tests.conftest import SHARED_DATA

pytestmark = pytest.mark.slow

VENV = Path(os.environ.get("DEXTR_LABELSTUDIO_VENV",
                           Path.home() / ".cache" / "dextr-test-venvs" / "labelstudio"))
PYTHON = VENV / "bin" / "python"
TOKEN = "dextr0test0token0000000000000000000000ab"
CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image"><Label value="person" background="#FF0000"/></BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true">
    <Label value="person" smart="true" background="#000000" showInline="true"/>
  </KeyPointLabels>
</View>"""

SERVER_TOKEN = "dextr-server-token"
USER = ("dextr@example.com", "dextr-test-password")
# The extreme points of the first pedestrian of FudanPed00001.png ([y, x]: left, right, top,
# bottom, the order split_points gives), from its Penn-Fudan mask.
PEDESTRIAN_YX = np.array([[397, 159], [427, 301], [181, 233], [430, 262]])
# One line: `label-studio shell` is an interactive console, where a block needs a blank line.
MAKE_PAT = ("from jwt_auth.models import LSAPIToken; from users.models import User; "
            "print('PAT=' + LSAPIToken.for_user(User.objects.get(email='dextr@example.com'))"
            ".get_full_jwt())\n")
SDK_ROUND_TRIP = """
import json, sys
import numpy as np
from label_studio_sdk.converter import brush
data = np.load(sys.argv[1])
out = {}
for name in data.files:
    m = data[name]
    ours = json.loads(open(sys.argv[2]).read())[name]
    flat = brush.decode_rle(ours)
    out[name] = {"decoded": flat.reshape(m.shape + (4,))[..., 3].astype(int).ravel().tolist(),
                 "sdk_rle": [int(b) for b in brush.mask2rle((m * 255).astype(np.uint8))]}
print(json.dumps(out))
"""


def _need(module: str) -> None:
    if not PYTHON.exists():
        pytest.skip(f"no Label Studio venv at {VENV} (see this file's docstring)")
    probe = subprocess.run([str(PYTHON), "-c", f"import {module}"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"{module} is not installed in {VENV}")


def test_brush_rle_matches_label_studio_sdk(tmp_path):
    _need("label_studio_sdk.converter.brush")
    rng = np.random.default_rng(0)
    masks = {"noise": rng.random((37, 53)) > 0.5, "empty": np.zeros((20, 30), bool),
             "full": np.ones((300, 300), bool),  # runs longer than the widest length field
             "disk": np.hypot(*np.mgrid[-60:60, -90:90]) < 50, "one": np.ones((1, 1), bool)}
    np.savez(tmp_path / "masks.npz", **masks)
    (tmp_path / "ours.json").write_text(json.dumps({k: mask_to_brush(m) for k, m in masks.items()}))
    run = subprocess.run([str(PYTHON), "-c", SDK_ROUND_TRIP, str(tmp_path / "masks.npz"),
                          str(tmp_path / "ours.json")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    sdk = json.loads(run.stdout)
    for name, m in masks.items():
        # The SDK decodes ours to the mask (alpha 255 on the object) ...
        assert np.array_equal(np.asarray(sdk[name]["decoded"]).reshape(m.shape) == 255, m), name
        # ... and we decode the SDK's encoding (which also writes literal chunks).
        assert np.array_equal(brush_to_mask(sdk[name]["sdk_rle"], *m.shape), m), name
        assert decode_brush(sdk[name]["sdk_rle"]).size == m.size * 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url}: the server exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(1)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s: {log.read_text()[-3000:]}")


def _api(base: str, method: str, path: str, body=None, *, files=None, token: str):
    """Label Studio's REST API with an access token; JSON in and out."""
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if files is not None:
        boundary = "dextrboundary0123456789"
        name, content = files
        data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n").encode() + content + \
            f"\r\n--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            text = r.read().decode()
    except urllib.error.HTTPError as e:
        pytest.fail(f"{method} {path}: {e.code} {e.read().decode()[:2000]}")
    return json.loads(text) if text else None


def _stop(proc: subprocess.Popen) -> None:
    """Stop a server this test started (its own process group: Label Studio forks workers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _keypoints(points_yx, h, w):
    """Smart keypoints as Label Studio's editor sends them (the centres of the pixels)."""
    return [{"id": f"k{i}", "type": "keypointlabels", "from_name": "kp", "to_name": "image",
             "original_width": w, "original_height": h, "image_rotation": 0,
             "is_positive": True, "origin": "manual",
             "value": {"x": (x + 0.5) * 100 / w, "y": (y + 0.5) * 100 / h, "width": 0.5,
                       "keypointlabels": ["person"]}} for i, (y, x) in enumerate(points_yx)]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """Label Studio with a project holding one Penn-Fudan photo, and ``dextr serve --token``
    connected to it as an interactive ML backend (Basic auth), both stopped afterwards."""
    _need("label_studio")
    photo = SHARED_DATA / "pennfudan" / "images" / "FudanPed00001.png"
    if not photo.exists():
        pytest.skip(f"{photo} is absent")
    import dextr_lib
    from tests.helpers.models import new_tiny_model

    tmp_path = tmp_path_factory.mktemp("labelstudio")
    model_path = Path(os.environ.get("DEXTR_LABELSTUDIO_MODEL") or tmp_path / "tiny.pt")
    if not os.environ.get("DEXTR_LABELSTUDIO_MODEL"):
        new_tiny_model().save(model_path)
    model = dextr_lib.load_model(model_path)
    ls_port, dextr_port = _free_port(), _free_port()
    ls = f"http://127.0.0.1:{ls_port}"
    env = {**os.environ, "LABEL_STUDIO_USERNAME": USER[0], "LABEL_STUDIO_PASSWORD": USER[1],
           "LABEL_STUDIO_USER_TOKEN": TOKEN,
           "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "ML_BLOCK_LOCAL_IP": "false",
           "SSRF_PROTECTION_ENABLED": "false", "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path / "ls"),
           "HOST": ls, "DJANGO_DB": "sqlite",
           "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""}  # no error reports leave the test
    ls_log, dextr_log = tmp_path / "ls.log", tmp_path / "dextr.log"
    times = {}
    t0 = time.monotonic()
    ls_bin = str(VENV / "bin" / "label-studio")
    data_dir = ["--data-dir", str(tmp_path / "ls")]
    subprocess.run([ls_bin, "init", "dextr", *data_dir], env=env, stdout=ls_log.open("w"),
                   stderr=subprocess.STDOUT, timeout=900, check=True)
    # Legacy tokens stay off, as Label Studio >= 1.20 ships: the token Label Studio sends dextr
    # at setup is refused and dextr uses the user's personal access token instead.
    shell = subprocess.run([ls_bin, "shell", *data_dir], env=env, input=MAKE_PAT,
                           text=True, capture_output=True, timeout=300, check=True)
    pat = next((line.split("PAT=", 1)[1].strip() for line in shell.stdout.splitlines()
                if "PAT=" in line), None)
    assert pat, shell.stdout + shell.stderr
    times["init"] = time.monotonic() - t0
    ls_proc = subprocess.Popen(
        [ls_bin, "start", "dextr", "--no-browser", "--port", str(ls_port),
         "--internal-host", "127.0.0.1", *data_dir],
        env=env, stdout=ls_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    dextr_proc = subprocess.Popen(
        [sys.executable, "-m", "dextr_cli", "serve", "-m", str(model_path), "--port",
         str(dextr_port), "--annotations", str(tmp_path / "ann.json"), "--token", SERVER_TOKEN],
        env={**os.environ, "LABEL_STUDIO_API_KEY": pat},
        stdout=dextr_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{dextr_port}/labelstudio/health", 120, dextr_proc, dextr_log)
        _wait_http(f"{ls}/health", 600, ls_proc, ls_log)
        times["start"] = time.monotonic() - t0
        req = urllib.request.Request(f"{ls}/api/token/refresh/", method="POST",
                                     data=json.dumps({"refresh": pat}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            access = json.loads(r.read())["access"]
        # The premise: the legacy token (the one Label Studio sends dextr at setup) is refused.
        legacy = urllib.request.Request(f"{ls}/api/projects",
                                        headers={"Authorization": f"Token {TOKEN}"})
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(legacy, timeout=60)
        project = _api(ls, "POST", "/api/projects", {"title": "dextr", "label_config": CONFIG},
                       token=access)
        pid = project["id"]
        _api(ls, "POST", f"/api/projects/{pid}/import", files=(photo.name, photo.read_bytes()),
             token=access)
        (task,) = _api(ls, "GET", f"/api/tasks?project={pid}", token=access)["tasks"]
        t1 = time.monotonic()
        backend = _api(ls, "POST", "/api/ml", {
            "url": f"http://127.0.0.1:{dextr_port}/labelstudio", "project": pid,
            "title": "dextr", "is_interactive": True, "auth_method": "BASIC_AUTH",
            "basic_auth_user": "dextr", "basic_auth_pass": SERVER_TOKEN}, token=access)
        backend = _api(ls, "GET", f"/api/ml/{backend['id']}", token=access)
        assert backend["state"] == "CO", backend  # connected
        times["connect"] = time.monotonic() - t1
        yield SimpleNamespace(ls=ls, access=access, project=pid, task=task["id"],
                              backend=backend["id"], model=model,
                              image=np.asarray(PIL.Image.open(photo).convert("RGB")), times=times)
    finally:
        _stop(dextr_proc)
        _stop(ls_proc)
        print("Label Studio e2e timings (s):", {k: round(v, 2) for k, v in times.items()})


def test_label_studio_gets_dextr_masks_from_four_keypoints(live):
    image, model = live.image, live.model
    h, w = image.shape[:2]
    clicks = _keypoints(PEDESTRIAN_YX, h, w)
    t2 = time.monotonic()
    answer = _api(live.ls, "POST", f"/api/ml/{live.backend}/interactive-annotating",
                  {"task": live.task, "context": {"result": clicks[:3]}}, token=live.access)
    live.times["three_points"] = time.monotonic() - t2
    assert not (answer.get("data") or {}).get("result"), answer
    t3 = time.monotonic()
    answer = _api(live.ls, "POST", f"/api/ml/{live.backend}/interactive-annotating",
                  {"task": live.task, "context": {"result": clicks}}, token=live.access)
    live.times["four_points"] = time.monotonic() - t3
    (region,) = answer["data"]["result"]
    assert region["value"]["brushlabels"] == ["person"]
    got = brush_to_mask(region["value"]["rle"], h, w)
    expected = model.predict([image], [PEDESTRIAN_YX], threshold=model.preprocess.threshold)[0]
    np.testing.assert_array_equal(got, expected)
    assert got.any()


def test_four_smart_keypoint_clicks_in_label_studio_show_the_dextr_mask(live, tmp_path):
    """Label Studio's labeling page in headless Chromium: Auto-Annotation on, the smart keypoint
    tool, four clicks on the pedestrian's extreme points; the suggestion appears and holds the
    library's mask for the points the page sent."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from tests.cli.test_serve_browser import CHROMIUM_ARGS, chromium

    image, model = live.image, live.model
    h, w = image.shape[:2]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(f"{live.ls}/user/login/")
            page.fill("input[name=email]", USER[0])
            page.fill("input[name=password]", USER[1])
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            t0 = time.monotonic()
            page.goto(f"{live.ls}/projects/{live.project}/data?task={live.task}")
            page.wait_for_function(
                "[...document.querySelectorAll('img')].some(i => i.complete && "
                f"i.naturalWidth === {w} && i.getBoundingClientRect().width > 200)")
            live.times["page"] = time.monotonic() - t0
            page.get_by_text("Auto-Annotation").click()
            # Without this setting each keypoint unselects the label and the next click is lost.
            page.locator("button[aria-label='Settings']").last.click()
            page.get_by_text("Keep label selected after creating a region").click()
            page.keyboard.press("Escape")
            page.locator("button.lsf-tool_smart[aria-label='key-point-tool']").dispatch_event(
                "click")
            page.locator(".lsf-label", has_text="person").nth(1).click()  # the keypoints' label
            # The photo as shown: its top-left corner and scale, to click its pixels.
            x0, y0, scale = page.evaluate(
                "(() => { const i = [...document.querySelectorAll('img')].filter(i => "
                f"i.naturalWidth === {w}).sort((a, b) => b.getBoundingClientRect().width - "
                "a.getBoundingClientRect().width)[0]; const r = i.getBoundingClientRect(); "
                "return [r.x, r.y, r.width / i.naturalWidth]; })()")
            t1 = time.monotonic()
            for y, x in PEDESTRIAN_YX[:3]:
                page.mouse.click(x0 + (x + 0.5) * scale, y0 + (y + 0.5) * scale)
                page.wait_for_timeout(300)
            y, x = PEDESTRIAN_YX[3]
            with page.expect_response(lambda r: "interactive-annotating" in r.url) as info:
                page.mouse.click(x0 + (x + 0.5) * scale, y0 + (y + 0.5) * scale)
            page.get_by_text("1 suggestions").wait_for()
            live.times["browser_fourth_click_to_suggestion"] = time.monotonic() - t1
            page.wait_for_timeout(1000)  # the mask is drawn after the counter
            shot = Path(os.environ.get("DEXTR_SCREENSHOT") or tmp_path / "labelstudio.png")
            page.screenshot(path=str(shot))
            sent = info.value.request.post_data_json["context"]["result"]
            answer = info.value.json()
        finally:
            browser.close()
    assert len(sent) == 4 and all(r["type"] == "keypointlabels" for r in sent)
    (region,) = answer["data"]["result"]
    xy = np.array([[r["value"]["x"] * w / 100, r["value"]["y"] * h / 100] for r in sent])
    extreme_yx, more, _ = split_points(xy, np.zeros((0, 2)))
    assert len(more) == 0
    np.testing.assert_allclose(extreme_yx, PEDESTRIAN_YX, atol=1.5)  # screen pixels round
    expected = model.predict([image], [extreme_yx], threshold=model.preprocess.threshold)[0]
    np.testing.assert_array_equal(brush_to_mask(region["value"]["rle"], h, w), expected)
    assert expected.any()
