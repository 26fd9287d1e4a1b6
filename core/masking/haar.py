"""License-free fallback face detector: OpenCV's Haar cascade (Viola & Jones 2001).

Used only when no SCRFD model is baked - e.g. a commercial deployment that leaves out
InsightFace's non-commercial ``buffalo_*`` packs - so that face protection never silently
turns off. The cascade ships inside opencv-python 4.x (``cv2.data.haarcascades``; OpenCV 5.0
dropped it, hence the pin below 5). It misses profile and small faces and can fire on texture;
a false positive only carves a hole in the mask, which errs on the safe side.

Arrays: image H x W x 3 uint8 RGB; boxes ``(x0, y0, x1, y1)`` float px of the original image.
"""

from __future__ import annotations

import cv2
import numpy as np

from core.masking.detectors import BoxDetection, check_rgb

CASCADE = "haarcascade_frontalface_default.xml"
#: Detection runs on a copy with this long side (px): 0.1-0.25 s per photo here at 640.
DETECT_SIDE = 640
#: ``detectMultiScale`` settings; 6 neighbours trades a few misses for fewer false positives.
SCALE_FACTOR, MIN_NEIGHBORS, MIN_SIZE_PX = 1.1, 6, 24


class HaarFaceDetector:
    """``detect(image) -> list[BoxDetection]`` with OpenCV's frontal-face cascade."""

    name = "haar"

    identity = {"key": "opencv-haar-frontalface", "source": f"opencv-python {cv2.__version__}",
                "revision": CASCADE, "dev": False}

    def __init__(self) -> None:
        path = cv2.data.haarcascades + CASCADE
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"OpenCV Haar cascade missing at {path}")

    def detect(self, image: np.ndarray) -> list[BoxDetection]:
        """Faces in an H x W x 3 uint8 RGB image; score is 1.0 (the cascade gives none).

        Raises:
            ValueError: ``image`` is not H x W x 3 uint8.
        """
        check_rgb(image)
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        s = min(1.0, DETECT_SIDE / max(grey.shape))
        small = cv2.resize(grey, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else grey
        found = self.cascade.detectMultiScale(small, scaleFactor=SCALE_FACTOR,
                                              minNeighbors=MIN_NEIGHBORS,
                                              minSize=(MIN_SIZE_PX, MIN_SIZE_PX))
        return [BoxDetection(box=(x / s, y / s, (x + w) / s, (y + h) / s), score=1.0,
                             detectors=[self.name])
                for x, y, w, h in (found if len(found) else [])]
