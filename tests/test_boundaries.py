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
