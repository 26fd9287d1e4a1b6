"""Both npm packages are ready to publish: ``npm publish --dry-run`` passes and the tarball
holds what a user installs (code, type declarations, licence, README) and nothing else.

``--dry-run`` packs exactly as a real publish would (``prepack`` builds ``clients/ts/dist``)
and sends nothing. Like the other Node tests it skips when ``node`` is missing, and fails in CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_mask_editor import PKG as EDITOR, editor_pkg  # noqa: F401 (fixture)
from tests.test_ts_client import TS, _ensure_node_modules, _node

SEMVER = re.compile(r"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$")


def _dry_run(pkg: Path) -> tuple[dict, dict]:
    """(package.json, the dry run's report of the tarball) for the package at ``pkg``."""
    npm = shutil.which("npm")
    assert npm, "node is installed but npm is not on PATH"
    env = {"npm_config_update_notifier": "false", "npm_config_fund": "false",
           "npm_config_audit": "false"}
    proc = subprocess.run([npm, "publish", "--dry-run", "--json", "--ignore-scripts=false"],
                          cwd=pkg, env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"npm publish --dry-run failed\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "npm error" not in proc.stderr, proc.stderr[-3000:]
    manifest = json.loads((pkg / "package.json").read_text())
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    return manifest, report.get(manifest["name"], report)


def _common(manifest: dict, report: dict) -> set[str]:
    files = {f["path"] for f in report["files"]}
    assert SEMVER.match(manifest["version"]) and report["version"] == manifest["version"]
    assert manifest["license"] == "Apache-2.0"
    assert "LICENSE" in files and "README.md" in files
    assert manifest.get("publishConfig", {}).get("access") == "public", (
        "a scoped package publishes as restricted (paid) unless access is public")
    assert not any(p.startswith(("test/", "node_modules/", "e2e/", "scripts/")) for p in files), files
    for target in (manifest["types"], manifest["main"]):
        assert target.removeprefix("./") in files, f"{target} is not in the tarball"
    return files


def test_client_package_publishes_with_types_and_the_react_entry():
    _node()
    _ensure_node_modules()
    manifest, report = _dry_run(TS)
    files = _common(manifest, report)
    for entry in manifest["exports"].values():
        if isinstance(entry, dict):
            for target in entry.values():
                assert target.removeprefix("./") in files, f"export {target} is missing"
    assert {"dist/index.d.ts", "dist/react.d.ts", "dist/react.js"} <= files
    assert manifest["peerDependenciesMeta"]["react"]["optional"] is True
    assert "dependencies" not in manifest, "the client has no runtime dependencies"


def test_mask_editor_package_publishes_with_types_and_the_page(editor_pkg):  # noqa: F811
    manifest, report = _dry_run(EDITOR)
    files = _common(manifest, report)
    assert {"src/index.js", "src/index.d.ts", "page/index.html", "page/app.js",
            "page/settings.js"} <= files
    readme = (EDITOR / "README.md").read_text()
    assert "## Install" in readme and "npm install" in readme
