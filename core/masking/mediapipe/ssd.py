"""MediaPipe SSD post-processing: anchors, box/keypoint decoding, weighted NMS.

Re-implements, from the sources in ``google-ai-edge/mediapipe``, ``SsdAnchorsCalculator``
(``mediapipe/calculators/tflite/ssd_anchors_calculator.cc``), ``TensorsToDetectionsCalculator``
(``mediapipe/calculators/tensor/tensors_to_detections_calculator.cc``) and
``NonMaxSuppressionCalculator`` with ``algorithm: WEIGHTED``
(``mediapipe/calculators/util/non_max_suppression_calculator.cc``): MediaPipe's Python package
cannot be installed beside numpy 2 (see :mod:`.runtime`). Import these names from
:mod:`.runtime`, which re-exports them.
"""

from __future__ import annotations

import numpy as np


def ssd_anchors(input_size: int, strides: list[int], interpolated_scale: bool = True,
                offset: float = 0.5) -> np.ndarray:
    """Anchor centres as MediaPipe's ``SsdAnchorsCalculator`` makes them (fixed size 1).

    Options used by all four detectors here: ``aspect_ratios: [1.0]``,
    ``fixed_anchor_size: true``, ``anchor_offset_x/y: 0.5``,
    ``reduce_boxes_in_lowest_layer: false``. Consecutive layers with the same stride share one
    feature map (``ceil(input_size / stride)`` cells a side); each such layer adds one anchor
    per cell, plus one more when ``interpolated_scale_aspect_ratio`` is set (1.0 for
    short-range face, palm and pose; 0.0 for full-range face). Counts: face full-range
    192 px [4] no interpolation -> 2304; short-range 128 px [8, 16, 16, 16] -> 896; palm
    192 px [8, 16, 16, 16] -> 2016; pose 224 px [8, 16, 32, 32, 32] -> 2254.

    Returns:
        N x 2 float32 ``(x_centre, y_centre)`` in [0, 1], in the order of the model's outputs
        (per layer group: rows, then columns, then anchors of a cell).
    """
    per_anchor = 2 if interpolated_scale else 1
    out = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        side = int(np.ceil(input_size / strides[i]))
        n = (j - i) * per_anchor
        ys, xs = np.meshgrid((np.arange(side) + offset) / side, (np.arange(side) + offset) / side,
                             indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(cells, n, axis=0))
        i = j
    return np.concatenate(out).astype(np.float32)


def sigmoid(logits: np.ndarray, clip: float = 100.0) -> np.ndarray:
    """Logistic function after clipping to +-``clip`` (``score_clipping_thresh: 100``)."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(logits, np.float64), -clip, clip)))


def decode_ssd(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray,
               input_size: int, num_keypoints: int, min_score: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode SSD outputs as ``TensorsToDetectionsCalculator`` does for these models.

    Regressors are ``(x_centre, y_centre, w, h, kx0, ky0, ...)`` in input px relative to the
    anchor (``x/y/w/h_scale`` = the input size, anchors of fixed size 1): divide by the input
    size and add the anchor centre (centres and keypoints only).

    Args:
        raw_boxes: N x (4 + 2K) float32 regressors.
        raw_scores: N x 1 (or N) float32 logits.
        anchors: N x 2 anchor centres from :func:`ssd_anchors`.
        input_size: S px.
        num_keypoints: K.
        min_score: keep detections whose sigmoid score reaches this (0-1).

    Returns:
        (M x 4 boxes ``x0, y0, x1, y1``, M scores, M x K x 2 keypoints), all normalised.

    Raises:
        ValueError: the anchor count differs from the model's output count.
    """
    if len(anchors) != len(raw_boxes):
        raise ValueError(f"{len(anchors)} anchors for {len(raw_boxes)} model outputs")
    scores = sigmoid(raw_scores.reshape(-1))
    keep = scores >= min_score
    raw, anc, scores = raw_boxes[keep] / input_size, anchors[keep], scores[keep]
    cx, cy = raw[:, 0] + anc[:, 0], raw[:, 1] + anc[:, 1]
    w, h = raw[:, 2], raw[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kps = raw[:, 4:4 + 2 * num_keypoints].reshape(-1, num_keypoints, 2) + anc[:, None, :]
    return boxes, scores, kps


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one ``x0, y0, x1, y1`` box with each row of ``boxes``."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray,
                 min_iou: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-max suppression (``NonMaxSuppressionCalculator``,
    ``algorithm: WEIGHTED``, ``overlap_type: INTERSECTION_OVER_UNION``).

    Take the best remaining detection, gather every remaining one whose IoU with it exceeds
    ``min_iou`` (itself included), and replace them by their score-weighted mean box and
    keypoints, keeping the best score. Works in any coordinate frame (px or normalised).

    Args:
        boxes: N x 4 ``x0, y0, x1, y1``; scores: N; keypoints: N x K x 2.
        min_iou: the ``min_suppression_threshold`` (0.3 in these MediaPipe graphs).

    Returns:
        (M x 4 boxes, M scores, M x K x 2 keypoints), by descending score.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    out_b, out_s, out_k = [], [], []
    remaining = np.arange(len(scores))
    while len(remaining):
        top = remaining[0]
        overlap = iou(boxes[top], boxes[remaining]) > min_iou
        overlap[0] = True
        group = remaining[overlap]
        wts = scores[group][:, None]
        out_b.append((boxes[group] * wts).sum(0) / wts.sum())
        out_k.append((keypoints[group] * wts[:, :, None]).sum(0) / wts.sum())
        out_s.append(scores[top])
        remaining = remaining[~overlap]
    if not out_s:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, *keypoints.shape[1:]))
    return np.array(out_b), np.array(out_s), np.array(out_k)
