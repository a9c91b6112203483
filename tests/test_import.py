"""``import pc_compile`` needs torch alone: the benchmark's dependencies stay out of the library."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("diffusers", "matplotlib", "safetensors", "benchmarks")


def heavy_modules_after(imports: str) -> list[str]:
    """The modules of HEAVY loaded by a fresh interpreter after ``import <imports>``."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        f"import {imports}\n"
        "assert pc_compile.__file__.startswith(sys.path[0]), pc_compile.__file__\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_import_loads_neither_diffusers_nor_matplotlib_nor_safetensors():
    assert heavy_modules_after("pc_compile") == []


def test_the_check_sees_a_heavy_import():
    # The benchmark's plots load matplotlib: the same probe reports it.
    assert "matplotlib" in heavy_modules_after("pc_compile, benchmarks.plots")
