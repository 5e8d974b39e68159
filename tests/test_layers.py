"""The packages import one way (pyproject.toml's [tool.importlinter] contracts), checked by import-linter."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter on the `ftc` package found under `root`, with `root`'s pyproject.toml contracts."""
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_layers_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_breaks_them(tmp_path: Path) -> None:
    """The contracts catch a spec module importing the compiler, and a runtime module importing a backend."""
    shutil.copytree(ROOT / "ftc", tmp_path / "ftc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for module, upward in (("spec/fields.py", "ftc.compiler.build"), ("runtime/errors.py", "ftc.backends.slurm")):
        path = tmp_path / "ftc" / module
        path.write_text(path.read_text() + f"\nimport {upward}  # an upward import\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "ftc.spec.fields -> ftc.compiler.build" in result.stdout
    assert "ftc.runtime.errors -> ftc.backends.slurm" in result.stdout
