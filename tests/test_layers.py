"""The import contracts of pyproject.toml ([tool.importlinter]): the layers, and no import
cycle inside a package. `make lint` runs the same check (lint-imports)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_import_contracts_are_kept():
    # In a process of its own: import-linter's command line calls logging.config.dictConfig,
    # which disables every logger that exists (xasr's included) in the process that runs it.
    done = subprocess.run(
        [str(LINT_IMPORTS), "--config", str(PYPROJECT), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=PYPROJECT.parent,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
