"""The layers of docs/ARCHITECTURE.md hold: the import-linter contracts in pyproject.toml pass
on the tree, and fail on a copy of it where pure code imports Prefect."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
PACKAGES = ("flows", "tasks", "models", "datasets")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(root), "PATH": str(Path(sys.executable).parent)},
        check=False,
    )


def test_contracts_hold_on_the_tree():
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_prefect_import_in_pure_code_breaks_the_build(tmp_path: Path):
    for name in PACKAGES:
        shutil.copytree(REPO_ROOT / name, tmp_path / name)
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    io = tmp_path / "datasets" / "io.py"
    io.write_text(io.read_text() + "\nfrom prefect import task\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "datasets.io -> prefect" in result.stdout
