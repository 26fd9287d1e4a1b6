"""The moderation stage of a job: the prompt check before any work, the image checks on the
input photo (``moderate_inputs``) and on every repainted result, the refusal record and the
audit line.

Policy (operator settings, never job fields; :class:`core.settings.Settings`):

- ``safety`` = ``block`` (default): a prompt that matches the term list, or an image in which a
  classifier scores a blocking label at or above its threshold, fails the job with
  ``content_blocked`` (not retryable). The message names the check (``prompt``, ``input``,
  ``output``) and the category, never the term or the prompt. A blocked image is never
  encoded, stored or returned (no result, mask or overlay); an image refusal is written to the
  job record (:func:`core.storage.write_refusal`), so a redelivery answers it again without
  repainting. A prompt refusal writes nothing (the check is cheap, deterministic and runs
  before the record is read).
- With ``safety=block`` and no image classifier loaded, every job fails closed with
  ``safety_unavailable`` (not retryable), as ``face_detection_unavailable`` does.
- ``safety`` = ``off``: nothing is checked; the result's ``moderation.policy`` says so.

Every block logs one audit line (logger ``maskpaint.safety``, WARNING): job id, check,
category, the labels and scores that blocked, and the sha256 of the prompt, never its text.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from core import timing
from core.contract import Job
from core.errors import ErrorCode, JobError
from core.moderation.base import ImageClassifier, Label
from core.moderation.prompt import TermList, load_terms
from core.result import ModerationInfo
from core.settings import Settings

log = logging.getLogger("maskpaint.safety")

#: Request fields holding free text that is checked against the term list.
CHECKED_TEXT_FIELDS: tuple[str, ...] = ("prompt",)
#: Free text that is never checked: people write "nude, naked" in a negative prompt precisely to
#: keep nudity out.
UNCHECKED_TEXT_FIELDS: tuple[str, ...] = ("negative_prompt",)
#: The repainted region's crop is classified on its own (besides the whole image) when it
#: covers less than this fraction of the image: whole-image scores barely move for a small
#: region (open_nsfw), and a 320 px detector loses detail of a region in a large photo (NudeNet).
REGION_CROP_MAX_FRACTION = 0.6
#: Margin added around the repainted region's box on each side, as a fraction of its size.
REGION_MARGIN = 0.1


def repaint_box(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` px of the pixels with ``alpha > 0`` (H x W float32), grown by
    :data:`REGION_MARGIN` and clipped to the image; None when nothing is repainted."""
    import cv2

    x, y, w, h = cv2.boundingRect((alpha > 0).view(np.uint8))
    if w == 0 or h == 0:
        return None
    H, W = alpha.shape[:2]
    mx, my = int(w * REGION_MARGIN), int(h * REGION_MARGIN)
    return max(0, x - mx), max(0, y - my), min(W, x + w + mx), min(H, y + h + my)


class Moderator:
    """The worker's moderation policy: settings, the loaded image classifiers and the term
    list. Built once per container (:meth:`build`); :meth:`start` begins one job's checks."""

    def __init__(self, settings: Settings, classifiers: list[ImageClassifier],
                 terms: TermList | None) -> None:
        self.settings = settings
        self.classifiers = list(classifiers)
        self.terms = terms

    @classmethod
    def build(cls, settings: Settings, models) -> Moderator:
        """From the worker's settings and model set (``models.moderation``; test doubles may
        have none).

        Raises:
            OSError / ValueError / KeyError: ``moderation_terms_path`` is unreadable or
                malformed (a worker must not run with a term list it cannot read).
        """
        if settings.safety == "off":
            log.warning("safety=off: prompts and images are not moderated")
            return cls(settings, [], None)
        extra = str(settings.moderation_terms_path) if settings.moderation_terms_path else None
        classifiers = list(getattr(models, "moderation", []) or [])
        if not classifiers:
            log.error("safety=block but no image moderation model is loaded (%s): every job "
                      "answers safety_unavailable. Bake one (python -m weights.bake --profile "
                      "<profile>, or python -m weights.tiny for dev weights) or set "
                      "MASKPAINT_SAFETY=off", getattr(models, "moderation_missing", None) or
                      "none baked")
        return cls(settings, classifiers, load_terms(extra))

    def start(self, job: Job, record: Callable[[JobError], object] | None = None
              ) -> JobModeration:
        """Begin ``job``'s checks: the prompt now, before any fetch or model work.

        Args:
            record: called with the ``content_blocked`` error of an image check before it is
                raised (the pipeline writes it to the job record, :func:`core.storage.
                write_refusal`); the error is raised even when another attempt had recorded a
                result first.

        Raises:
            JobError(content_blocked): the prompt matches the term list (nothing is written).
            JobError(safety_unavailable): safety is on and no image classifier is loaded.
        """
        run = JobModeration(self, job, record)
        if self.settings.safety == "off":
            return run
        run.check_prompt()
        if not self.classifiers:
            raise JobError(ErrorCode.safety_unavailable,
                           "no image moderation model could run on this worker, so no job is "
                           "run; the worker log names the bake command", retryable=False)
        return run


@dataclass
class JobModeration:
    """One job's moderation: the checks run so far and the highest score of each blocking
    label (the result's ``moderation`` facts)."""

    moderator: Moderator
    job: Job
    record: Callable[[JobError], object] | None = None
    checks: list[str] = field(default_factory=list)
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    ran: list[ImageClassifier] = field(default_factory=list)

    @property
    def on(self) -> bool:
        return self.moderator.settings.safety != "off"

    def check_prompt(self) -> None:
        """The prompt check: every :data:`CHECKED_TEXT_FIELDS` against the term list.

        Raises:
            JobError(content_blocked): a field matches (``field`` names it).
        """
        terms = self.moderator.terms
        if not self.on or terms is None:
            return
        self.checks.append("prompt")
        for name in CHECKED_TEXT_FIELDS:
            text = getattr(self.job.request, name)
            category = terms.match(text) if text else None
            if category is not None:
                raise self.block("prompt", category, {}, field=name)

    @property
    def checks_inputs(self) -> bool:
        """Whether the input check runs (``moderate_inputs`` with safety on)."""
        return self.on and self.moderator.settings.moderate_inputs

    def check_inputs(self, *images) -> None:
        """The input check (only when :attr:`checks_inputs`): each given photo, whole.

        Args:
            images: H x W x 3 uint8 RGB arrays, or decoded photos
                (:class:`core.imageio.Photo`, classified in sRGB); None entries are skipped.

        Raises:
            JobError(content_blocked): a photo is blocked (check ``input``); recorded first.
        """
        if self.checks_inputs:
            for image in images:
                if image is not None:
                    self._check("input", image.srgb() if hasattr(image, "srgb") else image,
                                None)

    def check_outputs(self, images: list[np.ndarray], alpha: np.ndarray | None) -> None:
        """The output check: every repainted image (H x W x 3 uint8), whole and, when small
        enough, the crop of the repainted region (:func:`repaint_box` of ``alpha``, H x W
        float32 blend weights).

        Raises:
            JobError(content_blocked): an image is blocked (check ``output``); recorded first.
        """
        if self.on and images:
            region = repaint_box(alpha) if alpha is not None else None
            for image in images:
                self._check("output", image, region)

    def _check(self, check: str, image: np.ndarray, region) -> None:
        if check not in self.checks:
            self.checks.append(check)
        views = [image]
        if region is not None:
            x0, y0, x1, y1 = region
            h, w = image.shape[:2]
            if (x1 - x0) * (y1 - y0) < REGION_CROP_MAX_FRACTION * w * h:
                views.append(np.ascontiguousarray(image[y0:y1, x0:x1]))
        settings = self.moderator.settings
        hits: list[tuple[str, Label]] = []
        for clf in self.moderator.classifiers:
            threshold = float(getattr(settings, clf.threshold_setting))
            best = self.scores.setdefault(clf.identity.get("key", clf.name), {})
            with timing.scope("safety"):
                for view in views:
                    for lab in clf.classify(view):
                        if lab.category is None:
                            continue
                        best[lab.label] = max(best.get(lab.label, 0.0), round(lab.score, 5))
                        if lab.score >= threshold:
                            hits.append((clf.name, lab))
            if clf not in self.ran:
                self.ran.append(clf)
        if hits:
            category = max(hits, key=lambda h: h[1].score)[1].category or "explicit"
            err = self.block(check, category, {f"{n}:{lab.label}": round(lab.score, 4)
                                               for n, lab in hits})
            if self.record is not None:
                self.record(err)
            raise err

    def block(self, check: str, category: str, classes: dict[str, float],
              field: str | None = None) -> JobError:
        """Log the audit line and return the ``content_blocked`` error for ``check``."""
        prompt = self.job.request.prompt or ""
        log.warning("content blocked: job=%s check=%s category=%s classes=%s prompt_sha256=%s",
                    self.job.id, check, category, classes or "-",
                    hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest(),
                    extra={"job_id": self.job.id, "code": ErrorCode.content_blocked.value})
        what = {"prompt": "the prompt", "input": "the input photo",
                "output": "the repainted image"}[check]
        return JobError(ErrorCode.content_blocked,
                        f"{check}: {what} was blocked by this service's content policy "
                        f"({category}); nothing was stored", field=field, retryable=False)

    def info(self) -> ModerationInfo:
        """The result's ``moderation`` facts."""
        return ModerationInfo(policy=self.moderator.settings.safety, checks=list(self.checks),
                              classifiers=[c.identity.get("key", c.name) for c in self.ran],
                              max_scores=self.scores)

    @property
    def identities(self) -> list[dict]:
        """Manifest identities of the classifiers that ran (for the result's ``models``)."""
        return [c.identity for c in self.ran if c.identity]


def screen_prompt(job: Job, settings: Settings) -> None:
    """The prompt check alone, for a front door that holds no models (the web API runs it at
    submit, so a refused prompt is answered at once and never queued). A no-op with
    ``safety=off``.

    Raises:
        JobError(content_blocked): as :meth:`JobModeration.check_prompt`.
    """
    if settings.safety == "off":
        return
    extra = str(settings.moderation_terms_path) if settings.moderation_terms_path else None
    JobModeration(Moderator(settings, [], load_terms(extra)), job).check_prompt()
