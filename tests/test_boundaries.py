"""Architecture rules: handlers stay light, the core stays provider-agnostic."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_handlers_import_no_torch():
    code = ("import sys, handlers.common, handlers.runpod; "
            "bad = [m for m in ('torch', 'diffusers', 'cv2', 'ultralytics') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_never_imports_providers():
    for path in (REPO / "core").rglob("*.py"):
        assert not _imports(path) & {"runpod", "modal"}, path


def test_handlers_do_no_image_work():
    for path in (REPO / "handlers").rglob("*.py"):
        assert not _imports(path) & {"torch", "PIL", "cv2", "numpy", "diffusers"}, path


#: room -> top-level packages its modules must not import (ARCHITECTURE.md, "Rooms").
FORBIDDEN = {
    "core": {"handlers", "bench", "runpod", "modal"},
    "handlers": {"bench"},
    "weights": {"core", "handlers", "bench"},
    "image_build": {"core", "handlers", "bench"},
}


def test_rooms_import_only_what_architecture_allows():
    bad = []
    for room, forbidden in FORBIDDEN.items():
        for path in (REPO / room).rglob("*.py"):
            hit = _imports(path) & forbidden
            if hit:
                bad.append(f"{path.relative_to(REPO)} imports {sorted(hit)}")
    for path in REPO.rglob("*.py"):
        rel = path.relative_to(REPO)
        if rel.parts[0] in ("bench", "tests", ".venv", "node_modules") or ".venv" in rel.parts:
            continue
        if "bench" in _imports(path):
            bad.append(f"{rel} imports bench")
    assert not bad, bad


def test_schema_export_and_web_api_stay_torch_free():
    code = ("import sys, handlers.schema, handlers.web, handlers.dispatch, handlers.modal; "
            "bad = [m for m in ('torch', 'diffusers', 'cv2', 'ultralytics') if m in sys.modules]; "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr



def test_no_module_over_400_lines():
    long = [f"{p.relative_to(REPO)}: {n}" for room in ("core", "handlers", "weights", "bench")
            for p in (REPO / room).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400]
    assert not long, long
