"""The mask editor (clients/mask-editor): its Node unit tests, then the editor in real Chromium.

The browser part runs ``clients/mask-editor/test/browser/run.mjs``: headless Debian
``chromium`` driven by ``playwright-core`` (no browser download), a real photo (ultralytics'
``bus.jpg``, 810 x 1080) shown at half size, a mouse brush stroke, a pen brush stroke and a
touch eraser stroke across the first, then PNG exports. The pixels are checked here with Pillow
and with the worker's own reader (``core.imageio.decode_mask``), against capsules computed
independently from the CSS coordinates the script used.

``make test`` installs Chromium and the npm packages first (``make editor-deps``). Skips
when node or Chromium is missing, except under ``CI`` where that fails.
"""

from __future__ import annotations

import hashlib
import io
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.imageio import decode_mask

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "clients" / "mask-editor"
STAMP = PKG / "node_modules" / ".maskpaint-lock.sha256"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")

# The strokes of run.mjs in CSS px of the page; the canvas is at (20, 20), 405 x 540 CSS px,
# showing an 810 x 1080 photo: photo px = (css - 20) * 2.
OFFSET, SCALE = 20, 2
MOUSE = ((70, 220), (370, 220), 30)  # from, to, brush diameter (CSS px)
PEN = ((100, 450), (300, 450), 10)
TOUCH_ERASER = ((220, 190), (220, 250), 20)


def _missing(what: str) -> None:
    if os.environ.get("CI"):  # CI must not go green with the editor untested
        pytest.fail(f"{what} (CI runs `make editor-deps` first)")
    pytest.skip(what)


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        _missing("node is not on PATH: the mask editor tests need Node.js 20+")
    return node


def _chromium() -> str:
    explicit = os.environ.get("MASKPAINT_CHROMIUM")
    for path in (explicit, *CHROMIUM_CANDIDATES):
        if path and Path(path).exists():
            return path
    _missing("Chromium is not installed (apt-get install -y chromium, or `make editor-deps`)")


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "npm_config_update_notifier": "false", "npm_config_fund": "false",
           "npm_config_audit": "false"}
    proc = subprocess.run(cmd, cwd=PKG, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def editor_pkg() -> Path:
    """clients/mask-editor with node_modules installed from its exact package-lock.json."""
    _node()
    lock_sha = hashlib.sha256((PKG / "package-lock.json").read_bytes()).hexdigest()
    if not (STAMP.exists() and STAMP.read_text().strip() == lock_sha):
        _run([shutil.which("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"], 300)
        STAMP.write_text(lock_sha + "\n")
    return PKG


def test_unit_tests_pass_under_node():
    """The model's node:test suite: export size, conventions, undo/redo/clear/invert."""
    files = sorted(str(p.relative_to(PKG)) for p in (PKG / "test").glob("*.test.mjs"))
    assert files, "no unit test files"
    proc = _run([_node(), "--test", *files], 120)
    assert "# fail 0" in proc.stdout, proc.stdout[-3000:]


def test_type_declarations_compile(editor_pkg):
    """src/index.d.ts and examples/usage.ts (the README's usage) type-check with tsc --strict."""
    _run([_node(), "node_modules/typescript/bin/tsc", "-p", "tsconfig.json"], 180)


def _capsule(shape: tuple[int, int], stroke) -> np.ndarray:
    """H x W bool: pixel centres within the brush radius of the stroke's segment (photo px)."""
    (ax, ay), (bx, by), diameter = stroke
    ax, ay, bx, by = ((v - OFFSET) * SCALE for v in (ax, ay, bx, by))
    r = diameter / 2 * SCALE
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    dx, dy = bx - ax, by - ay
    t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
    return (xx - ax - t * dx) ** 2 + (yy - ay - t * dy) ** 2 <= r * r


@pytest.fixture(scope="module")
def browser_run(editor_pkg, tmp_path_factory) -> tuple[Path, dict]:
    chromium = _chromium()
    bus = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets" / "bus.jpg"
    out = tmp_path_factory.mktemp("mask-editor")
    _run([_node(), "test/browser/run.mjs", "--photo", str(bus), "--out", str(out),
          "--chromium", chromium], 180)
    return out, json.loads((out / "facts.json").read_text())


def _decode(path: Path) -> np.ndarray:
    return decode_mask(path.read_bytes(), (810, 1080))


def test_browser_strokes_export_at_photo_size_and_worker_reads_them(browser_run):
    out, facts = browser_run
    assert facts["errors"] == []
    assert facts["photoSize"] == {"width": 810, "height": 1080}
    assert facts["rect"] == {"left": 20, "top": 20, "width": 405, "height": 540}, (
        "the canvas is displayed at half the photo's size")
    assert facts["pointerTypesSeen"] == ["mouse", "pen", "touch"]
    assert facts["dataUrlPrefix"] == "data:image/png;base64,"

    png = Image.open(out / "mask-white-on-black.png")
    assert png.format == "PNG" and png.size == (810, 1080)
    px = np.asarray(png.convert("RGBA"))
    assert (px[..., 3] == 255).all(), "white-on-black is opaque"
    assert set(np.unique(px[..., :3])) <= {0, 255}

    shape = (1080, 810)
    expected = (_capsule(shape, MOUSE) | _capsule(shape, PEN)) & ~_capsule(shape, TOUCH_ERASER)
    got = _decode(out / "mask-white-on-black.png")
    wrong = int((got != expected).sum())
    assert wrong <= 0.01 * expected.sum(), f"{wrong} pixels differ from the strokes drawn"
    # the painted stroke, its erased middle, the pen stroke, untouched photo
    assert got[400, 200] and got[400, 650] and got[400, 370]
    assert not got[400, 400], "the touch eraser cut the mouse stroke"
    assert got[860, 300] and not got[880, 300]
    assert not got[400, 40] and not got[440, 300] and not got[100, 100]

    alpha = np.asarray(Image.open(out / "mask-alpha.png").convert("RGBA"))
    assert alpha.shape == (1080, 810, 4)
    assert (alpha[..., 3][~expected & ~_capsule(shape, TOUCH_ERASER)] == 0).all(), (
        "alpha convention: unpainted pixels are transparent")
    assert (_decode(out / "mask-alpha.png") == got).all(), "both conventions mean the same mask"


def test_browser_undo_invert_clear(browser_run):
    out, facts = browser_run
    got = _decode(out / "mask-white-on-black.png")
    undone = _decode(out / "mask-undo-eraser.png")
    assert undone[400, 400], "undo of the eraser stroke brings the painted pixels back"
    assert (undone[got]).all()
    inverted = _decode(out / "mask-inverted.png")
    assert (inverted == ~got).all(), "redo then invert: exactly the complement"
    assert not _decode(out / "mask-cleared.png").any()
    assert facts["emptyAfterClear"] is True
    with Image.open(out / "editor-strokes.png") as shot:  # the page as shown, strokes tinted
        rgb = np.asarray(shot.convert("RGB")).astype(int)
    # photo (200, 400) is shown at CSS (120, 220): tinted towards the mask colour (255, 0, 96)
    r, g, _ = rgb[220, 120]
    assert r > g + 60, "the painted stroke shows as a red tint over the photo"


TS = REPO / "clients" / "ts"
TS_STAMP = TS / "node_modules" / ".maskpaint-lock.sha256"  # the same stamp as test_ts_client.py


@pytest.fixture(scope="module")
def ts_dist(editor_pkg) -> Path:
    """@maskpaint/client built (clients/ts/dist), which the reference page imports."""
    lock_sha = hashlib.sha256((TS / "package-lock.json").read_bytes()).hexdigest()
    env = {**os.environ, "npm_config_update_notifier": "false"}
    if not (TS_STAMP.exists() and TS_STAMP.read_text().strip() == lock_sha):
        subprocess.run([shutil.which("npm"), "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=TS, env=env, check=True, capture_output=True, timeout=300)
        TS_STAMP.write_text(lock_sha + "\n")
    subprocess.run([shutil.which("npm"), "run", "build", "--silent"], cwd=TS, env=env, check=True,
                   capture_output=True, timeout=180)
    return TS / "dist"


def test_reference_page_loop_against_a_canned_web_api(ts_dist, tmp_path):
    """The page, unchanged, with ModalClient against canned `POST /jobs` / `GET /jobs/{id}`:
    auto mask as the editable layer, an error shown with its code and field, an edit, a
    repaint whose `mask` is the edited mask at the photo's size, the gallery; then with
    RunpodClient against canned `/run` + `/status/{id}`: the worker's stage and step shown."""
    chromium = _chromium()
    bus = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets" / "bus.jpg"
    shot, facts_path = tmp_path / "page.png", tmp_path / "facts.json"
    _run([_node(), "scripts/screenshot.mjs", "--photo", str(bus), "--out", str(shot),
          "--facts", str(facts_path), "--chromium", chromium], 180)
    facts = json.loads(facts_path.read_text())
    reqs = facts["requests"]
    assert [r["task"] for r in reqs] == ["mask", "inpaint", "inpaint"]
    assert reqs[0]["output"] == {"return_base64": True} and reqs[0]["targets"] == ["upper"]
    assert reqs[1]["prompt"] == "" and "invalid_input" in facts["error"]["text"]
    assert "field: prompt" in facts["error"]["text"]
    assert reqs[2]["prompt"] == "a red leather jacket" and reqs[2]["hasMask"]
    assert facts["status"].startswith("Done") and facts["errors"] == []
    assert facts["links"] == ["result (810x1080)", "mask (810x1080)", "overlay (810x1080)"]

    sent = tmp_path / "sent-mask-demo-2.png"
    with Image.open(sent) as im:
        assert im.size == (810, 1080), "the mask is sent at the photo's pixel size"
    mask = decode_mask(sent.read_bytes(), (810, 1080))
    assert mask[600, 150], "the automatic garment mask is kept"
    assert not mask[433, 137], "the face cut out of the automatic mask stays out"
    assert mask[700, 580], "the brush stroke is sent"
    assert not mask[700, 630], "the eraser's cut is sent"
    with Image.open(shot) as im:
        assert im.width == 1280 and im.height > 900
    # on a RunPod endpoint the worker's progress is shown while it runs
    assert "stage: inpaint step 12 / 30" in facts["runpodProgress"]["text"]
    assert facts["runpodProgress"]["bar"] == 12
    assert facts["runpodStatus"].startswith("Done") and "seed 7" in facts["runpodStatus"]


# scripts/live.mjs's strokes, photo px (STROKE, ERASE there): from, to, brush diameter
LIVE_STROKE = ((520, 640), (720, 640), 40)
LIVE_ERASE = ((620, 590), (620, 690), 20)


def _photo_capsule(shape: tuple[int, int], stroke) -> np.ndarray:
    (ax, ay), (bx, by), diameter = stroke
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    dx, dy = bx - ax, by - ay
    t = np.clip(((xx - ax) * dx + (yy - ay) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
    return (xx - ax - t * dx) ** 2 + (yy - ay - t * dy) ** 2 <= (diameter / 2) ** 2


def test_reference_page_whole_loop_against_the_live_local_web_api(ts_dist, dev_weights,
                                                                  tmp_path):
    """``make serve``'s server (``python -m handlers.serve``, dev weights) and the page in real
    Chromium: a bad file shows ``invalid_image``; bus.jpg, the automatic mask from the worker, a
    brush stroke and an eraser cut, a 2-step repaint; the result shown has the photo's size and
    every pixel outside the sent mask grown by the dilate + feather band is the photo's own.
    The screenshot of this run is docs/mask-editor.png (``MASKPAINT_WRITE_SCREENSHOT=1``)."""
    import urllib.request

    import cv2

    from tests.live_server import local_web

    chromium = _chromium()
    bus = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets" / "bus.jpg"
    bad = tmp_path / "holiday.jpg"
    bad.write_bytes(b"this is not a JPEG at all" * 40)
    shot, sent, facts_path = tmp_path / "live.png", tmp_path / "sent-mask.png", tmp_path / "f.json"
    with local_web(dev_weights, tmp_path / "out", tmp_path / "serve.log") as srv:
        url = f"{srv['url']}/mask-editor/page/?token={srv['token']}"
        try:
            _run([_node(), "scripts/live.mjs", "--url", url, "--photo", str(bus), "--bad",
                  str(bad), "--out", str(shot), "--mask", str(sent), "--facts", str(facts_path),
                  "--chromium", chromium], 420)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- server\n"
                                 + srv["log"].read_text(errors="replace")[-3000:]) from None
        facts = json.loads(facts_path.read_text())
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(facts["after"]["src"], timeout=30) as r:  # the image the page shows
            result_bytes = r.read()

    assert facts["errors"] == []
    assert "invalid_image" in facts["badFile"] and "field: image" in facts["badFile"]
    assert facts["errorHiddenAfterPhoto"] is True
    assert facts["autoError"] is None and facts["maskFacts"].startswith("Mask:")
    assert facts["status"].startswith("Done") and "seed 42" in facts["status"]
    assert any("Repainting" in s for s in facts["statuses"])
    assert facts["after"]["src"].startswith(srv["url"] + "/outputs/")
    assert (facts["after"]["width"], facts["after"]["height"]) == (810, 1080)
    assert facts["links"][0] == "result (810x1080)"

    mask = decode_mask(sent.read_bytes(), (810, 1080))
    stroke = _photo_capsule((1080, 810), LIVE_STROKE) & ~_photo_capsule((1080, 810), LIVE_ERASE)
    assert mask[640, 540] and mask[640, 700], "the brush stroke is sent"
    assert not mask[640, 620], "the eraser's cut is sent"
    assert (mask[stroke]).mean() > 0.97

    from PIL import Image

    with Image.open(bus) as im:
        photo = np.asarray(im.convert("RGB")).astype(int)
    with Image.open(io.BytesIO(result_bytes)) as im:
        assert im.size == (810, 1080)
        result = np.asarray(im.convert("RGB")).astype(int)
    band = 8 + 8 + 2  # mask_dilate_px + mask_feather_px defaults, + 2 px of rounding
    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * band + 1, 2 * band + 1), np.uint8))
    outside = grown == 0
    assert outside.mean() > 0.5
    assert (result[outside] == photo[outside]).all(), "pixels outside the edit changed"
    assert (result[mask] != photo[mask]).any(), "the painted region was repainted"
    if os.environ.get("MASKPAINT_WRITE_SCREENSHOT"):
        shutil.copyfile(shot, REPO / "docs" / "mask-editor.png")


@pytest.fixture(scope="module")
def page_run(ts_dist, tmp_path_factory) -> dict:
    """``test/browser/page.mjs``: the reference page against canned APIs in Chromium."""
    import pillow_heif

    chromium = _chromium()
    bus = Path(importlib.util.find_spec("ultralytics").origin).parent / "assets" / "bus.jpg"
    out = tmp_path_factory.mktemp("page")
    heic = out / "IMG_0001.HEIC"  # an iPhone-style HEIC of a real photo
    pillow_heif.register_heif_opener()
    with Image.open(bus) as im:
        im.convert("RGB").resize((405, 540)).save(heic, format="HEIF", quality=80)
    _run([_node(), "test/browser/page.mjs", "--photo", str(bus), "--heic", str(heic),
          "--out", str(out), "--chromium", chromium], 240)
    facts = json.loads((out / "facts.json").read_text())
    assert facts["errors"] == [], facts["errors"]
    return facts


def test_page_never_sends_a_saved_key_to_a_linked_api(page_run):
    """A crafted ``?api=`` link: the page asks; until then the saved API gets the photo; once
    agreed, the linked origin gets requests with no Authorization at all (web API and RunPod)."""
    f = page_run
    assert "token" not in f["addressAfterToken"], "?token= is removed from the address bar"
    assert list(f["savedAfterToken"]["tokens"].values()) == ["tok-own"]
    assert f["askShown"] and "evil.test" in f["askText"]
    assert f["beforeAgreeing"] and {r["origin"] for r in f["beforeAgreeing"]} != {"http://evil.test"}
    assert all(r["origin"] != "http://evil.test" for r in f["beforeAgreeing"])
    assert all(r["authorization"] == "Bearer tok-own" for r in f["beforeAgreeing"])
    assert f["afterAgreeing"] and all(r["origin"] == "http://evil.test" for r in f["afterAgreeing"])
    assert all(r["authorization"] is None for r in f["afterAgreeing"]), "no saved key went there"
    assert "http://evil.test" not in f["savedAfterAgreeing"]["tokens"]
    assert f["runpodAskShown"]
    assert f["runpodRequests"] and all(r["origin"] == "http://evil.test" and r["authorization"] is None
                                       for r in f["runpodRequests"]), "the RunPod key stayed home"
    assert f["hostileUrls"] == [], "a javascript: URL or a text/html data: URL was rendered"


def test_page_cancels_a_queued_then_running_job(page_run):
    f = page_run
    assert f["queuedText"].startswith("Repainting: queued, 2 ahead")
    assert f["runningBar"]["value"] < f["runningBar"]["max"], "the bar is not full while it runs"
    assert "step 8 / 8" in f["runningBar"]["text"]
    assert f["cancelVisible"]
    assert [r["method"] for r in f["cancelRequests"]] == ["POST", "DELETE"]
    assert f["cancelRequests"][1]["path"] == "/jobs/job-1"
    assert f["cancelRequests"][0]["idempotencyKey"], "submits carry an Idempotency-Key"
    assert f["cancelledText"].startswith("Cancelled (job job-1: cancelled)")
    assert f["buttonsAfterCancel"] == {"submit": False, "cancelHidden": True}


def test_page_opens_a_heic_photo_through_the_worker(page_run):
    f = page_run
    assert f["heic"]["error"] is None and f["heic"]["toolbar"]
    assert f["heic"]["decodedBy"] == "worker"
    assert f["heic"]["size"] == {"width": 810, "height": 1080}, "the worker's preview is shown"
    (req,) = f["heicRequests"]
    assert req["task"] == "mask" and req["image"].startswith("data:image/heif;base64,AAAA")


def test_page_fits_a_390_px_phone(page_run):
    phone = page_run["phone"]
    for stage in ("empty", "photo", "result"):
        assert phone[stage]["scroll"] <= phone[stage]["inner"] == 390, (stage, phone[stage])
        assert phone[stage]["auto"] <= 390, "Find the mask is on screen"
    assert phone["empty"]["toolbar"] == "none", "no toolbar before a photo"
    assert phone["toolbarRows"]["right"] <= 390 and phone["toolbarRows"]["height"] > 60, (
        "the toolbar wraps onto several rows")


def test_page_draws_the_no_paint_layer_and_takes_a_synthetic_pen(page_run):
    p = page_run["protection"]
    # face [112, 404, 162, 462] + 25 %, hand [236, 500, 284, 542] + 10 %: the worker's grow_box
    assert p["boxes"] == [[99, 389, 175, 477], [231, 495, 289, 547]]
    assert p["drawn"] != p["bare"], "the face region is drawn over the photo"
    r, g, b, _ = p["drawn"]
    assert g > r and g > b, "in the face colour (green, as on the worker's overlay)"
    assert p["before"] == 255 and p["after"] == 255, "the pen stroke painted on both sides"
    assert p["face"] == 0, "and stopped at the protected face"
    assert page_run["corsError"].startswith("CorsError:") and "CORS" in page_run["corsError"]
    assert page_run["resultInView"], "the result is scrolled into view"
    assert page_run["downloads"] == ["job-3-image.jpg", "job-3-mask.png", "job-3-overlay.jpg"]


def test_the_local_servers_root_redirects_to_the_page(settings_factory, model_set, dev_weights,
                                                       monkeypatch):
    """``make serve``'s ``/`` leads to the page (it answered a JSON 404)."""
    from fastapi.testclient import TestClient

    from core.pipeline import build_worker
    from handlers.serve import PAGE_PATH, local_app

    monkeypatch.setenv("MASKPAINT_WEIGHTS_DIR", str(dev_weights))
    app = local_app(build_worker(model_set, settings_factory()), public_url="http://testserver",
                    token="t" * 24)
    with TestClient(app) as client:
        r = client.get("/", follow_redirects=False)
        assert r.status_code in (302, 307) and r.headers["location"] == PAGE_PATH
        page = client.get("/")
        assert page.status_code == 200 and "importmap" in page.text
