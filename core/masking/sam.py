"""Box-prompted mask refinement with Segment Anything (SAM).

The production checkpoint is ``sam_vit_b_01ec64.pth`` (manifest key ``sam-vit-b``, arch
``vit_b``); ``weights.tiny.masking.write_tiny_sam`` writes a random checkpoint with a tiny
image encoder whose dims the receipt carries as ``arch`` (pass them as ``arch_overrides``).

Arrays: images are H x W x 3 uint8 RGB; masks H x W bool (True = object) at the original
size; boxes ``(x0, y0, x1, y1)`` float px of the original image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.build_sam import _build_sam

from core import timing
from core.masking.detectors import check_rgb
from weights.resolve import ModelMissing

#: Image-encoder dims of each registry arch, as in segment_anything/build_sam.py
#: (``build_sam_vit_b/l/h``); the base that ``arch_overrides`` are applied to.
ARCH_DIMS: dict[str, dict[str, Any]] = {
    "vit_b": {"encoder_embed_dim": 768, "encoder_depth": 12, "encoder_num_heads": 12,
              "encoder_global_attn_indexes": [2, 5, 8, 11]},
    "vit_l": {"encoder_embed_dim": 1024, "encoder_depth": 24, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [5, 11, 17, 23]},
    "vit_h": {"encoder_embed_dim": 1280, "encoder_depth": 32, "encoder_num_heads": 16,
              "encoder_global_attn_indexes": [7, 15, 23, 31]},
}

#: Most float32 elements the mask upsampling of one batch of boxes may hold (one H x W mask per
#: box: the best of SAM's three candidates is chosen before upsampling): 16 M elements = 64 MB.
#: Bigger images run fewer boxes per batch (one 12 MP box at a time).
MAX_UPSAMPLE_ELEMENTS = 16 * 1024 * 1024

Box = Sequence[float]


def infer_encoder_dims(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """Image-encoder dims read off a SAM ``state_dict`` (None if it is not one).

    embed dim = rows of the patch-embedding conv; depth = number of blocks; a block is global
    when its relative-position table spans the whole 64 x 64 token grid (2 * 64 - 1 rows; SAM's
    windowed blocks span 2 * 14 - 1); heads = embed dim / the table's head dim.
    """
    try:
        embed = int(state["image_encoder.patch_embed.proj.weight"].shape[0])
        blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks.")})
        rel = [state[f"image_encoder.blocks.{i}.attn.rel_pos_h"] for i in blocks]
    except (KeyError, ValueError, IndexError):
        return None
    return {"encoder_embed_dim": embed, "encoder_depth": len(blocks),
            "encoder_num_heads": embed // int(rel[0].shape[1]),
            "encoder_global_attn_indexes": [i for i, r in zip(blocks, rel) if r.shape[0] == 127]}


class SamRefiner:
    """A loaded SAM with its predictor. Build with :meth:`load`; one per container."""

    def __init__(self, model: torch.nn.Module, device: str) -> None:
        self.model = model
        self.device = device
        self.predictor = SamPredictor(model)

    @classmethod
    def load(
        cls,
        path: Path | str,
        arch: str = "vit_b",
        arch_overrides: Mapping[str, Any] | None = None,
        device: str = "cpu",
        *,
        key: str = "sam-vit-b",
    ) -> SamRefiner:
        """Build SAM with segment-anything's builder and load a ``state_dict`` checkpoint.

        The model is built with ``checkpoint=None`` and the weights are read here with
        ``torch.load(path, map_location="cpu", weights_only=True)`` (segment-anything's own
        loader has no ``map_location``, so CUDA-saved files fail on CPU hosts, and it unpickles
        arbitrary objects), then moved to ``device``.

        Args:
            path: the ``.pth`` state dict (``<weights_dir>/sam/sam_vit_b_01ec64.pth``).
            arch: a ``segment_anything.sam_model_registry`` key: vit_b, vit_l or vit_h.
            arch_overrides: image-encoder dims replacing those of ``arch`` (``_build_sam``
                keywords: encoder_embed_dim, encoder_depth, encoder_num_heads,
                encoder_global_attn_indexes) - the receipt's ``arch`` of the tiny dev model.
                None / empty: the dims read off the checkpoint (:func:`infer_encoder_dims`),
                which equal the registry's for the real checkpoints.
            device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
            key: manifest key, only used in the :class:`ModelMissing` message.

        Raises:
            ModelMissing: ``path`` is not a file.
            ValueError: unknown ``arch`` or override key, or the checkpoint's tensors do not fit
                the built architecture (e.g. tiny dev weights loaded without their overrides).
        """
        path = Path(path)
        if not path.is_file():
            raise ModelMissing(key, path)
        if arch not in ARCH_DIMS or arch not in sam_model_registry:
            raise ValueError(f"unknown SAM arch {arch!r}; known: {sorted(ARCH_DIMS)}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if arch_overrides:
            unknown = set(arch_overrides) - set(ARCH_DIMS[arch])
            if unknown:
                raise ValueError(f"unknown SAM arch override(s) {sorted(unknown)}")
            model = _build_sam(checkpoint=None, **{**ARCH_DIMS[arch], **dict(arch_overrides)})
        else:
            dims = infer_encoder_dims(state)
            model = (_build_sam(checkpoint=None, **dims) if dims and dims != ARCH_DIMS[arch]
                     else sam_model_registry[arch](checkpoint=None))
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(
                f"{path.name} does not fit SAM {arch} with overrides {dict(arch_overrides or {})}"
                " (dev weights need the receipt's `arch`)"
            ) from exc
        model.to(device).eval()
        return cls(model, device)

    def to(self, device: str) -> SamRefiner:
        """Move SAM to ``device``; a fresh predictor drops any image embedding from before."""
        self.model.to(device)
        self.device = device
        self.predictor = SamPredictor(self.model)
        return self

    def refine(self, image: np.ndarray, boxes: Sequence[Box]) -> list[tuple[np.ndarray, float]]:
        """Segment the object in each box: one box prompt per box, best of SAM's 3 masks.

        ``predictor.set_image`` (the image encoder, the costly part: 0.3-0.7 s on 2 CPU cores
        for the tiny dev model, ~20 s for the real vit_b) runs once per call, however many
        boxes; each box then costs one mask-decoder pass (~0.1-0.2 s on CPU). The best of the
        three candidate masks is chosen by predicted IoU at the decoder's 256 x 256 and only it
        is upsampled to H x W (segment-anything's ``postprocess_masks``, then ``> 0``): the same
        mask as ``predict_torch`` gives, a third of its upsampling. The encoder's
        features are dropped on return, so no image state is kept between calls.

        Args:
            image: H x W x 3 uint8 RGB.
            boxes: ``(x0, y0, x1, y1)`` px of the original image; clipped to it.

        Returns:
            One ``(mask, score)`` per box, in order: mask is H x W bool at the original size,
            score SAM's predicted IoU of that mask (float, nominally 0-1) - the highest of the
            three candidates of ``multimask_output=True``, whose mask is returned. Empty list
            (and no encoder run) when ``boxes`` is empty.

        Raises:
            ValueError: ``image`` is not H x W x 3 uint8, or a box is not 4 finite numbers.
        """
        check_rgb(image)
        if len(boxes) == 0:
            return []
        h, w = image.shape[:2]
        arr = np.asarray(boxes, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 4 or not np.isfinite(arr).all():
            raise ValueError("boxes must be a list of (x0, y0, x1, y1) finite numbers")
        arr[:, [0, 2]] = arr[:, [0, 2]].clip(0, w)
        arr[:, [1, 3]] = arr[:, [1, 3]].clip(0, h)
        per_batch = max(1, MAX_UPSAMPLE_ELEMENTS // (h * w))
        model = self.model
        out: list[tuple[np.ndarray, float]] = []
        with torch.inference_mode():
            with timing.forward():
                self.predictor.set_image(image, image_format="RGB")
            try:
                for i in range(0, len(arr), per_batch):
                    tb = torch.as_tensor(arr[i:i + per_batch], dtype=torch.float32,
                                         device=self.predictor.device)
                    tb = self.predictor.transform.apply_boxes_torch(tb, (h, w))
                    # SamPredictor.predict_torch's steps, with the best of the 3 candidates
                    # chosen at the decoder's 256 x 256 and only that one upsampled
                    with timing.forward():
                        sparse, dense = model.prompt_encoder(points=None, boxes=tb, masks=None)
                        low_res, ious = model.mask_decoder(
                            image_embeddings=self.predictor.features,
                            image_pe=model.prompt_encoder.get_dense_pe(),
                            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                            multimask_output=True)
                        best = ious.argmax(dim=1)
                        rows = torch.arange(len(best), device=best.device)
                        sel_scores = ious[rows, best].float().cpu().numpy()  # (syncs CUDA)
                    masks = model.postprocess_masks(low_res[rows, best][:, None],
                                                    self.predictor.input_size,
                                                    self.predictor.original_size)
                    sel_masks = (masks[:, 0] > model.mask_threshold).cpu().numpy()  # B x H x W
                    out.extend((m, float(sc)) for m, sc in zip(sel_masks, sel_scores))
            finally:
                self.predictor.reset_image()  # drop the features: no image state between jobs
        return out

    def segment(self, image: np.ndarray, box: Box, points: np.ndarray, labels: np.ndarray
                ) -> tuple[np.ndarray, float]:
        """Segment one object from a box and points (the prompts the pose gives,
        :mod:`core.masking.pose_sam`).

        With several prompts at once SAM's single-mask output is the one to use
        (``multimask_output=False``: the segment-anything README, "Using multiple prompts";
        its three candidates are for an ambiguous lone point). One encoder run, one decoder
        pass (segment-anything's ``SamPredictor.predict``); the features are dropped on return.

        Args:
            image: H x W x 3 uint8 RGB.
            box: ``(x0, y0, x1, y1)`` px of the original image; clipped to it.
            points: N x 2 float px of the original image (x, y).
            labels: N ints, 1 = on the object, 0 = not on it.

        Returns:
            ``(mask, score)``: H x W bool at the original size, SAM's predicted IoU (nominally
            0-1).

        Raises:
            ValueError: ``image`` is not H x W x 3 uint8, a box that is not 4 finite numbers,
                or points and labels of different lengths.
        """
        check_rgb(image)
        h, w = image.shape[:2]
        arr = np.asarray(box, dtype=np.float64).reshape(-1)
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        if arr.shape != (4,) or not np.isfinite(arr).all() or len(pts) != len(lab):
            raise ValueError("segment: a box of 4 finite numbers and one label per point")
        arr[[0, 2]] = arr[[0, 2]].clip(0, w)
        arr[[1, 3]] = arr[[1, 3]].clip(0, h)
        with torch.inference_mode():
            with timing.forward():
                self.predictor.set_image(image, image_format="RGB")
            try:
                with timing.forward():
                    masks, scores, _ = self.predictor.predict(
                        point_coords=pts if len(pts) else None,
                        point_labels=lab if len(lab) else None,
                        box=arr, multimask_output=False)
            finally:
                self.predictor.reset_image()
        return masks[0].astype(bool), float(scores[0])
