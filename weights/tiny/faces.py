"""The tiny SCRFD face detector of the dev weights (see :mod:`weights.tiny.masking` for the
layout, receipt and determinism rules it shares with the other masking writers)."""

from __future__ import annotations

import math
from pathlib import Path

from weights.manifest import ReceiptEntry, write_receipt_entry
from weights.tiny.masking import DEFAULT_FACE_MARKER_RGB, _entry_path, _file_record, _tmp

# --------------------------------------------------------------------------------------------
# SCRFD (faces)
# --------------------------------------------------------------------------------------------

#: Five landmarks (eyes, nose, mouth corners) as fractions of the box, the SCRFD/RetinaFace
#: keypoint order; only there so the graph has SCRFD's keypoint outputs.
_KPS_FRACTIONS = ((0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.8), (0.65, 0.8))


def _scrfd_graph(marker_rgb: tuple[int, int, int], tolerance: int, score: float):
    """Build the tiny SCRFD ONNX model (see :func:`write_tiny_scrfd`)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    inits: list = []

    def const(name: str, value, dtype=np.float32) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    # insightface feeds (pixel - 127.5) / 128 in RGB order (blobFromImage, swapRB=True on BGR)
    marker = (np.asarray(marker_rgb, np.float32) - 127.5) / 128.0
    const("marker", marker.reshape(1, 3, 1, 1))
    const("tol", tolerance / 128.0)
    const("zero", 0.0)
    const("one", 1.0)
    const("big", 1.0e6)
    const("negbig", -1.0e6)
    const("score_gain", 4.0)
    const("score_max", score)
    const("axis1", [1], np.int64)
    const("i0", 0, np.int64)
    const("i1", 1, np.int64)
    const("i2", 2, np.int64)
    const("i3", 3, np.int64)
    const("shape_n1", [-1, 1], np.int64)
    const("shape_n4", [-1, 4], np.int64)
    const("shape_n10", [-1, 10], np.int64)
    const("ax1", [1], np.int64)
    const("ax2", [2], np.int64)

    # per-pixel marker mask M (1, 1, H, W) in {0, 1}
    node("Sub", ["input.1", "marker"], "d_sub")
    node("Abs", ["d_sub"], "d_abs")
    node("ReduceSum", ["d_abs", "axis1"], "d_l1", keepdims=1)
    node("Less", ["d_l1", "tol"], "m_bool")
    node("Cast", ["m_bool"], "m", to=TensorProto.FLOAT)

    # pixel coordinates
    node("Shape", ["input.1"], "in_shape")
    node("Gather", ["in_shape", "i2"], "in_h", axis=0)
    node("Gather", ["in_shape", "i3"], "in_w", axis=0)
    node("Range", ["i0", "in_w", "i1"], "xs_i")
    node("Range", ["i0", "in_h", "i1"], "ys_i")
    node("Cast", ["xs_i"], "xs", to=TensorProto.FLOAT)  # (W,)
    node("Cast", ["ys_i"], "ys_flat", to=TensorProto.FLOAT)
    node("Unsqueeze", ["ys_flat", "ax1"], "ys")  # (H, 1)
    node("Add", ["xs", "one"], "xs1")
    node("Add", ["ys", "one"], "ys1")

    # bounding box of all marker pixels (x1/y1 exclusive), in input px; +-1e6 when none
    node("Where", ["m_bool", "xs", "big"], "x0_map")
    node("Where", ["m_bool", "ys", "big"], "y0_map")
    node("Where", ["m_bool", "xs1", "negbig"], "x1_map")
    node("Where", ["m_bool", "ys1", "negbig"], "y1_map")
    node("ReduceMin", ["x0_map"], "bx0", keepdims=0)
    node("ReduceMin", ["y0_map"], "by0", keepdims=0)
    node("ReduceMax", ["x1_map"], "bx1", keepdims=0)
    node("ReduceMax", ["y1_map"], "by1", keepdims=0)
    node("Sub", ["bx1", "bx0"], "bw")
    node("Sub", ["by1", "by0"], "bh")

    kps_xy = []
    for j, (fx, fy) in enumerate(_KPS_FRACTIONS):
        const(f"kfx{j}", fx)
        const(f"kfy{j}", fy)
        node("Mul", ["bw", f"kfx{j}"], f"kdx{j}")
        node("Mul", ["bh", f"kfy{j}"], f"kdy{j}")
        kps_xy.append((node("Add", ["bx0", f"kdx{j}"], f"kx{j}"),
                       node("Add", ["by0", f"kdy{j}"], f"ky{j}")))

    outputs: dict[str, list] = {"score": [], "bbox": [], "kps": []}
    for s in (8, 16, 32):
        p = f"s{s}_"
        const(p + "stride", float(s))
        # score per cell: 0.95 x min(1, 4 x fraction of marker pixels in the s x s cell)
        node("AveragePool", ["m"], p + "cov", kernel_shape=[s, s], strides=[s, s])  # (1,1,h,w)
        node("Mul", [p + "cov", "score_gain"], p + "cov4")
        node("Min", [p + "cov4", "one"], p + "cov1")
        node("Mul", [p + "cov1", "score_max"], p + "sc")
        # anchor centres (x * s, y * s), the cell grid as insightface builds it
        node("Shape", [p + "cov"], p + "shape")
        node("Gather", [p + "shape", "i2"], p + "h", axis=0)
        node("Gather", [p + "shape", "i3"], p + "w", axis=0)
        node("Range", ["i0", p + "w", "i1"], p + "cx_i")
        node("Range", ["i0", p + "h", "i1"], p + "cy_i")
        node("Cast", [p + "cx_i"], p + "cx_f", to=TensorProto.FLOAT)
        node("Cast", [p + "cy_i"], p + "cy_f", to=TensorProto.FLOAT)
        node("Mul", [p + "cx_f", p + "stride"], p + "cx")  # (w,)
        node("Mul", [p + "cy_f", p + "stride"], p + "cy_v")
        node("Unsqueeze", [p + "cy_v", "ax1"], p + "cy")  # (h, 1)
        node("Mul", [p + "cy", "zero"], p + "zero_h1")
        node("Add", [p + "cx", p + "zero_h1"], p + "cxg")  # (h, w)
        node("Mul", [p + "cx", "zero"], p + "zero_w")
        node("Add", [p + "cy", p + "zero_w"], p + "cyg")  # (h, w)

        def per_anchor(values: list[str], name: str, width: int) -> str:
            """(h, w) maps -> (h*w*2, width) rows in insightface's (y, x, anchor) order."""
            cols = [node("Unsqueeze", [v, "ax2"], f"{v}_u") for v in values]  # (h, w, 1)
            node("Concat", cols, name + "_hwc", axis=2)  # (h, w, width)
            node("Reshape", [name + "_hwc", f"shape_n{width}"], name + "_one")  # (h*w, width)
            node("Concat", [name + "_one", name + "_one"], name + "_two", axis=1)
            return node("Reshape", [name + "_two", f"shape_n{width}"], name)

        # scores (h*w*2, 1)
        node("Reshape", [p + "sc", "shape_n1"], p + "sc1")
        node("Concat", [p + "sc1", p + "sc1"], p + "sc2", axis=1)
        outputs["score"].append(node("Reshape", [p + "sc2", "shape_n1"], f"score_{s}"))
        # box distances in stride units (left, top, right, bottom)
        node("Sub", [p + "cxg", "bx0"], p + "l_px")
        node("Sub", [p + "cyg", "by0"], p + "t_px")
        node("Sub", ["bx1", p + "cxg"], p + "r_px")
        node("Sub", ["by1", p + "cyg"], p + "b_px")
        dist = [node("Div", [p + k + "_px", p + "stride"], p + k) for k in ("l", "t", "r", "b")]
        outputs["bbox"].append(per_anchor(dist, f"bbox_{s}", 4))
        # keypoint offsets in stride units (x0, y0, ..., x4, y4)
        kd = []
        for j, (kx, ky) in enumerate(kps_xy):
            node("Sub", [kx, p + "cxg"], f"{p}kx{j}_px")
            node("Sub", [ky, p + "cyg"], f"{p}ky{j}_px")
            kd.append(node("Div", [f"{p}kx{j}_px", p + "stride"], f"{p}kx{j}"))
            kd.append(node("Div", [f"{p}ky{j}_px", p + "stride"], f"{p}ky{j}"))
        outputs["kps"].append(per_anchor(kd, f"kps_{s}", 10))

    graph_outputs = []
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for name, s in zip(outputs[kind], (8, 16, 32)):
            graph_outputs.append(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{s}", width]))
    graph = helper.make_graph(
        nodes, "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])],
        graph_outputs, initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="maskpaint-tiny",
        doc_string=f"maskpaint dev-random SCRFD stand-in: one face at the RGB{tuple(marker_rgb)} "
        "marker region",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_tiny_scrfd(
    weights_dir: Path,
    key: str = "faces-scrfd",
    marker_rgb: tuple[int, int, int] = DEFAULT_FACE_MARKER_RGB,
    tolerance: int = 48,
    score: float = 0.95,
) -> Path:
    """Write a tiny SCRFD-signature ONNX face detector at the manifest path of ``key``.

    The file sits at ``<weights_dir>/insightface/models/<pack>/det_10g.onnx`` for the manifest
    entry (the layout ``FaceAnalysis(name=pack, root=<weights_dir>/insightface)`` reads). Its
    graph has SCRFD's signature: input ``input.1`` of shape 1 x 3 x H x W float (dynamic H, W;
    insightface's ``(px - 127.5) / 128`` in RGB order), 9 outputs - scores (N x 1), box
    distances (N x 4) and keypoint offsets (N x 10) for strides 8/16/32 with 2 anchors per cell,
    N = H/s x W/s x 2 - so insightface 2.1's model router (5 or more outputs) makes it an
    ``SCRFD`` and its static-shape session rewrite accepts it. It has no learned weights.

    TEST AID - how it "detects" a face: it reports exactly one face, whose box is the bounding
    box of all pixels within ``tolerance`` (L1 over R, G, B, in 0-255 levels) of ``marker_rgb``,
    with score ``score`` (on every anchor whose cell is at least 1/4 marker; insightface's NMS
    keeps one). No marker pixel -> no face. So a test paints a filled rectangle of
    ``marker_rgb`` onto a photo (RGB), runs the detector and expects that rectangle back in
    original-image px, within about one detector-input pixel (``long side / 640`` px at
    ``det_size=(640, 640)``) plus one for resize blending. The default colour (255, 0, 128) is
    not symmetric under an R<->B swap, so an RGB/BGR mix-up finds nothing. Make the rectangle
    at least 8 detector px a side (``8 x long side / 640`` original px at det_size 640) so that
    some stride-8 cell is 1/4 covered. Several marker patches give ONE box around all of them.

    Args:
        weights_dir: the weights root.
        key: manifest key of an ``insightface_det`` entry.
        marker_rgb: the marker colour, RGB 0-255.
        tolerance: L1 colour distance (sum over R, G, B, 0-255 levels) still counted as marker.
        score: the detection score reported, in (0, 1]; keep it above ``det_thresh``.

    Returns:
        The written ``.onnx`` path (about 13 kB).

    Raises:
        ValueError: ``score`` outside (0, 1], ``tolerance`` not in 1..765, or ``marker_rgb``
            not three integers in 0..255.
    """
    if len(marker_rgb) != 3 or not all(0 <= int(c) <= 255 for c in marker_rgb):
        raise ValueError("marker_rgb must be three integers in 0..255")
    if not 0.0 < score <= 1.0 or math.isnan(score):
        raise ValueError("score must be in (0, 1]")
    if not 1 <= tolerance <= 765:
        raise ValueError("tolerance must be in 1..765")
    import onnx

    out = _entry_path(weights_dir, key)
    onnx.save(_scrfd_graph(tuple(int(c) for c in marker_rgb), tolerance, score), _tmp(out))
    _tmp(out).replace(out)
    hexcol = "".join(f"{int(c):02x}" for c in marker_rgb)
    write_receipt_entry(
        Path(weights_dir), key,
        ReceiptEntry(source="dev-random", revision=f"dev-marker-{hexcol}", dev=True,
                     files=[_file_record(out)]),
    )
    return out
