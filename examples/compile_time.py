"""Cold and warm compile times: plain torch.compile against the precisecache backend.

Each measurement is a fresh process timing the first call of the compiled model (Dynamo
trace + compilation + one run). "cold" starts from an empty Inductor cache directory,
"warm" reuses the directory the cold run filled (the FX graph cache serves the kernels).

    python examples/compile_time.py [--layers 2,12]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, ".")
from tests.tiny_models import build, first_output
layers, backend, preset = int(sys.argv[1]), sys.argv[2], sys.argv[3]
tiny = build("wan", num_layers=layers)
if backend == "inductor":
    compiled = torch.compile(tiny.model)
else:
    compiled = torch.compile(tiny.model, backend="precisecache", options={"preset": preset})
with torch.no_grad():
    start = time.perf_counter()
    first_output(compiled(**tiny.make_inputs(900.0, 1)))
    first_output(compiled(**tiny.make_inputs(900.0, 2)))
    first = time.perf_counter() - start
    start = time.perf_counter()
    for t in (800.0, 700.0):
        first_output(compiled(**tiny.make_inputs(t, 1)))
    steady = (time.perf_counter() - start) / 2
print(json.dumps({"first_call_s": first, "step_s": steady}))
"""


def measure(layers: int, backend: str, preset: str, cache_dir: str) -> dict:
    env = {"TORCHINDUCTOR_CACHE_DIR": cache_dir, "PATH": "/usr/bin:/bin"}
    import os

    env = {**os.environ, **env}
    out = subprocess.run([sys.executable, "-c", CHILD, str(layers), backend, preset],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", default="2,12")
    args = parser.parse_args()
    print(f"{'model':<14} {'backend':<22} {'cold s':>7} {'warm s':>7}")
    for layers in map(int, args.layers.split(",")):
        for backend, preset in (("inductor", "-"), ("precisecache", "off"),
                                ("precisecache", "turbo")):
            with tempfile.TemporaryDirectory() as cache_dir:
                cold = measure(layers, backend, preset, cache_dir)
                warm = measure(layers, backend, preset, cache_dir)
            name = backend if preset == "-" else f"{backend} {preset}"
            print(f"{f'wan {layers} layers':<14} {name:<22} {cold['first_call_s']:7.1f} "
                  f"{warm['first_call_s']:7.1f}", flush=True)


if __name__ == "__main__":
    main()
