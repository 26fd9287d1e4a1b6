"""Compiled UNet: ``torch.compile`` per working size, with portable cache artefacts.

At 512 px the SD 1.5 UNet mostly waits on kernel launches: a first H200 run made outside this
project (the team's notes; torch 2.11, fp16, batch 2, 64 x 64 latents, the UNet alone) saw one
step take 25.2 ms eager and 6.4 ms with ``torch.compile(mode="reduce-overhead",
fullgraph=True)`` (CUDA graphs), after a 62 s first compile; ``python -m bench.gpu`` measures
it through the job path. So the compile must not happen per job, nor per cold start from
scratch:

- ``python -m core.compile --weights DIR`` (on the GPU type that will serve; the Modal image
  build can run it on a GPU) loads the models as a worker does, compiles the UNet for every
  generation bucket (:mod:`core.buckets`) and conditioning path by running real 2-step passes
  (:func:`core.warmup.one_pass`), and stores PyTorch's portable compile caches
  (``torch.compiler.save_cache_artifacts``) in ``<weights dir>/compile/<key>/`` with
  ``meta.json``; ``<key>`` names the GPU arch, torch and triton versions the artefacts are for.
- At cold start with ``MASKPAINT_COMPILE_UNET`` on, :func:`enable` loads them
  (``torch.compiler.load_cache_artifacts``), replays the same passes (the compile then hits the
  caches) and from then on runs the UNet compiled for exactly the call signatures (tensor
  shapes, dtypes, IP-Adapter scales) it compiled, eager for any other, so a job never waits for a
  compile. Missing artefacts, another arch / torch / triton, or another UNet (config, attention
  processors): eager, with one log line.

Why hand-written: diffusers / PyTorch give the compile and the caches, not the choice of which
calls may take the compiled path; a recompile in the middle of a job would cost a minute.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import platform
import re
import time
from pathlib import Path
from typing import Any

from core.sampling import LORA_ON_ATTR

log = logging.getLogger("maskpaint.compile")

#: Folder under the weights dir that holds one folder of artefacts per runtime key.
ARTEFACT_DIR = "compile"
ARTEFACT_FILE = "artifacts.bin"
META_FILE = "meta.json"
#: Recompiles dynamo may keep per code object (one per bucket x batch x conditioning path).
RECOMPILE_LIMIT = 256


def runtime_key(device: str) -> dict[str, str]:
    """What compile artefacts depend on: ``{"arch": "sm_90" | "cpu-x86_64", "torch", "triton"}``."""
    import torch

    if device.startswith("cuda"):
        major, minor = torch.cuda.get_device_capability(torch.device(device))
        arch = f"sm_{major}{minor}"
    else:
        arch = f"cpu-{platform.machine()}"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return {"arch": arch, "torch": torch.__version__, "triton": triton_version}


def key_name(key: dict[str, str]) -> str:
    """The artefact folder's name for a :func:`runtime_key`, e.g.
    ``sm_90-torch2.11.0-triton3.6.0``."""
    raw = f"{key['arch']}-torch{key['torch']}-triton{key['triton']}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", raw)


def artefact_dir(weights_dir: Path, key: dict[str, str]) -> Path:
    return Path(weights_dir) / ARTEFACT_DIR / key_name(key)


def unet_fingerprint(unet: Any) -> str:
    """sha256 of what the compiled graph depends on besides the runtime: the UNet's config,
    dtype and attention processor classes (an IP-Adapter swaps them)."""
    procs = sorted(f"{k}={type(v).__name__}" for k, v in unet.attn_processors.items())
    blob = json.dumps({"config": dict(unet.config), "dtype": str(unet.dtype), "procs": procs},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _spec(x: Any) -> str:
    """A call argument's part of the signature: tensors by shape and dtype, containers by their
    items, other values by value (dynamo specialises on Python scalars)."""
    import torch

    if isinstance(x, torch.Tensor):
        return f"T{tuple(x.shape)}{str(x.dtype).removeprefix('torch.')}"
    if isinstance(x, (list, tuple)):
        return "[" + ",".join(_spec(v) for v in x) + "]"
    if isinstance(x, dict):
        return "{" + ",".join(f"{k}:{_spec(v)}" for k, v in sorted(x.items())) + "}"
    return repr(x)


class UNetDispatch:
    """Replaces ``unet.forward``: compiled for the allowed call signatures, eager otherwise.

    Args:
        unet: a loaded ``UNet2DConditionModel`` (its IP-Adapter, if any, already loaded).
        mode: ``torch.compile`` mode (``"reduce-overhead"`` on CUDA: CUDA graphs).
        allowed: signatures that may run compiled; None = every call compiles (building the
            artefacts) and its signature is recorded in :attr:`seen`.
    """

    def __init__(self, unet: Any, mode: str | None, allowed: set[str] | None) -> None:
        import torch

        for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name,
                        max(RECOMPILE_LIMIT, getattr(torch._dynamo.config, name)))
        self.eager = unet.forward
        self.compiled = torch.compile(self.eager, fullgraph=True, dynamic=False, mode=mode)
        self.allowed = allowed
        self.seen: list[str] = []
        self.failed: set[str] = set()
        self.calls = {"compiled": 0, "eager": 0}
        # IP-Adapter processors branch on their scale in Python: it is part of the signature
        procs = getattr(unet, "attn_processors", {})
        self._scaled = [p for p in procs.values() if hasattr(p, "scale")]
        unet.forward = self

    def signature(self, args: tuple, kwargs: dict) -> str:
        scales = ",".join(repr(p.scale) for p in self._scaled)
        # a draft's LoRA on is another graph (core.sampling.LORA_ON_ATTR): not an allowed one
        unet = getattr(self.eager, "__self__", None)
        lora = "lora" if getattr(unet, LORA_ON_ATTR, False) else ""
        return f"{_spec(list(args))}{_spec(kwargs)}s[{scales}]{lora}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sig = self.signature(args, kwargs)
        if sig in self.failed or (self.allowed is not None and sig not in self.allowed):
            self.calls["eager"] += 1
            return self.eager(*args, **kwargs)
        self.calls["compiled"] += 1
        if sig in self.seen:
            return self.compiled(*args, **kwargs)
        try:
            out = self.compiled(*args, **kwargs)
        except Exception as exc:  # e.g. a graph break under fullgraph: this signature stays eager
            log.warning("UNet compile failed for one call signature (%s: %s); it runs eager",
                        type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            self.failed.add(sig)
            self.calls["compiled"] -= 1
            self.calls["eager"] += 1
            return self.eager(*args, **kwargs)
        self.seen.append(sig)
        return out


def _mode(device: str) -> str | None:
    return "reduce-overhead" if device.startswith("cuda") else None


def enable(models: Any, weights_dir: Path) -> dict[str, float]:
    """Load the compile artefacts for this runtime and compile every inpainting model's UNet
    they cover, by replaying their passes (:func:`core.warmup.one_pass`).

    Never raises for missing or mismatching artefacts: one log line, and the UNets stay eager.

    Returns:
        ``{"compile.load": ms, "compile.<model key>": ms}`` (empty when nothing was compiled).
    """
    import torch

    from core.warmup import one_pass

    key = runtime_key(models.device)
    folder = artefact_dir(weights_dir, key)
    if not (folder / META_FILE).is_file() or not (folder / ARTEFACT_FILE).is_file():
        others = sorted(p.parent.name for p in
                        (Path(weights_dir) / ARTEFACT_DIR).glob("*/" + META_FILE))
        if others:
            log.warning("compile artefacts are for %s, not this runtime %s; the UNet runs eager "
                        "(make them here: python -m core.compile --weights %s)",
                        ", ".join(others), key_name(key), weights_dir)
        else:
            log.warning("no compile artefacts at %s; the UNet runs eager (make them: python -m "
                        "core.compile --weights %s)", folder, weights_dir)
        return {}
    out: dict[str, float] = {}
    t = time.perf_counter()
    try:
        meta = json.loads((folder / META_FILE).read_text())
        torch.compiler.load_cache_artifacts((folder / ARTEFACT_FILE).read_bytes())
    except Exception as exc:  # unreadable artefacts must not stop the worker
        log.warning("compile artefacts in %s could not be loaded (%s: %s); the UNet runs eager",
                    folder, type(exc).__name__, str(exc)[:200])
        return {}
    out["compile.load"] = round((time.perf_counter() - t) * 1000, 1)
    stale = []
    for mkey, inp in models.inpainters.items():
        m = meta.get("models", {}).get(mkey)
        if m is None or m.get("fingerprint") != unet_fingerprint(inp.pipe.unet):
            stale.append(mkey)
            continue
        t = time.perf_counter()
        disp = UNetDispatch(inp.pipe.unet, _mode(models.device), set(m["signatures"]))
        cond = getattr(models, "conditioning", {}).get(mkey)
        for p in m["passes"]:
            try:
                one_pass(inp, cond, p["variant"], tuple(p["size"]), p["num_outputs"])
            except Exception:
                log.exception("compiled pass %s of %s failed", p, mkey)
        out[f"compile.{mkey}"] = round((time.perf_counter() - t) * 1000, 1)
        log.info("UNet of %s compiled for %d call signatures in %.0f ms", mkey,
                 len(disp.seen), out[f"compile.{mkey}"])
    if stale:
        log.warning("compile artefacts in %s were made for another UNet of %s (config or "
                    "add-ons differ); those run eager", folder, ", ".join(stale))
    return out


def build(models: Any, weights_dir: Path, sizes: dict[str, list[tuple[int, int]]],
          num_outputs: list[int], variants: list[str] | None = None) -> Path:
    """Compile every inpainting model's UNet for ``sizes[model key]`` x conditioning paths x
    ``num_outputs`` and write the artefacts for this runtime.

    Returns:
        The artefact folder (``<weights_dir>/compile/<key>``).

    Raises:
        RuntimeError: PyTorch produced no cache artefacts (nothing compiled).
    """
    import torch

    from core.warmup import one_pass, variants as paths

    meta: dict[str, Any] = {"key": runtime_key(models.device), "models": {}}
    for mkey, inp in models.inpainters.items():
        cond = getattr(models, "conditioning", {}).get(mkey)
        fingerprint = unet_fingerprint(inp.pipe.unet)
        disp = UNetDispatch(inp.pipe.unet, _mode(models.device), None)
        passes = []
        for size in sizes.get(mkey, []):
            for variant in paths(cond):
                if variants and variant not in variants:
                    continue
                for n in num_outputs:
                    t = time.perf_counter()
                    one_pass(inp, cond, variant, size, n)
                    passes.append({"size": list(size), "variant": variant, "num_outputs": n,
                                   "ms": round((time.perf_counter() - t) * 1000, 1)})
                    log.info("compiled %s %s %dx%d x%d in %.0f ms", mkey, variant, *size, n,
                             passes[-1]["ms"])
        meta["models"][mkey] = {"fingerprint": fingerprint, "passes": passes,
                                "signatures": disp.seen}
    saved = torch.compiler.save_cache_artifacts()
    if saved is None:
        raise RuntimeError("torch.compiler.save_cache_artifacts() returned nothing")
    folder = artefact_dir(weights_dir, meta["key"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ARTEFACT_FILE).write_bytes(saved[0])
    (folder / META_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    """``python -m core.compile --weights DIR [--models KEY ...] [--sizes native|buckets]
    [--num-outputs 1 ...] [--variants plain ...] [--device cuda]``."""
    from core.buckets import buckets_for
    from core.logs import setup_logging
    from core.pipeline import load_models
    from core.settings import Settings

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, required=True, help="the baked weights dir")
    ap.add_argument("--models", nargs="*", help="inpainting model keys (default: all baked)")
    ap.add_argument("--sizes", choices=("buckets", "native"), default="buckets",
                    help="every generation bucket (default) or only the native square")
    ap.add_argument("--size", nargs="*", default=None, metavar="WxH",
                    help="exactly these working sizes, px (overrides --sizes)")
    ap.add_argument("--num-outputs", type=int, nargs="*", default=[1])
    ap.add_argument("--variants", nargs="*", help="plain / garment / pose (default: all loaded)")
    ap.add_argument("--device", default=None)
    a = ap.parse_args(argv)
    setup_logging()
    settings = Settings(weights_dir=a.weights, device=a.device, inpaint_models=a.models or None)
    models = load_models(settings)
    sizes = {k: (list(buckets_for(m.resolution)) if a.sizes == "buckets"
                 else [(m.resolution, m.resolution)]) for k, m in models.inpainters.items()}
    if a.size:
        fixed = [tuple(int(v) for v in s.lower().split("x")) for s in a.size]
        sizes = {k: fixed for k in models.inpainters}
    t = time.perf_counter()
    folder = build(models, a.weights, sizes, a.num_outputs, a.variants)
    print(f"compile artefacts in {folder} ({time.perf_counter() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
