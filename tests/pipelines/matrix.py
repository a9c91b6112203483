"""The findings matrix of the pipeline tests: every pipeline x scheduler x scenario, run with
the precisecache backend and with plain torch.compile, printed as a Markdown table.

    python -m tests.pipelines.matrix [--pipelines wan,flux] [--presets off,turbo] [--out FILE]

Scenarios ``offload: ...`` run the pipeline under ``pipe.enable_model_cpu_offload(device="cpu")``
with the transformers compiled in place (``module.compile``); ``lora: ...`` load a random LoRA
(``tests/pipelines/test_lora.py``) into each transformer before compiling, and into the
uncompiled reference too.

Per cell: pass, or the exception and the deepest frame of ``pc_compile`` (or of torch when
``pc_compile`` is not on the stack); the relative error of the last output against the
uncompiled pipeline (max |a - b| / max |b|); ``compute_fraction``; and the Dynamo compiles (unique
graphs Dynamo handed to a backend, the probe's included). The pieces run eagerly unless the
scenario's name ends in ``/inductor``: what is checked is the behaviour across calls, not
Inductor's kernels.
"""

from __future__ import annotations

import argparse
import time
import traceback

import torch

import pc_compile
from tests.pipelines import factory

# (pipeline, scheduler, scenarios): every pipeline with its usual scheduler through every
# scenario; Wan (whose schedulers every flow pipeline shares) and CogVideoX through the step
# counts with the other schedulers.
ALL = None
STEPS = ["steps 30,10,50"]
CASES = [
    ("wan", "unipc", ALL), ("wan", "euler", STEPS), ("wan", "heun", STEPS), ("wan", "dpm", STEPS),
    ("wan2.2", "unipc", ALL),
    ("cogvideox", "ddim", ALL), ("cogvideox", "cogdpm", STEPS),
    ("ltx", "euler", ALL), ("flux", "euler", ALL), ("qwenimage", "euler", ALL),
    ("hunyuanvideo", "euler", ALL),
]

# name -> (dynamic, list of (size, batch, steps, interrupt_after or None))
SCENARIOS = {
    "res A,B,A,C": (None, [("A", 1, 4, None), ("B", 1, 4, None), ("A", 1, 4, None),
                           ("C", 1, 4, None)]),
    "batch 1,2,1": (None, [("A", 1, 4, None), ("A", 2, 4, None), ("A", 1, 4, None)]),
    "steps 30,10,50": (None, [("A", 1, 30, None), ("A", 1, 10, None), ("A", 1, 50, None)]),
    "interrupt, full": (None, [("A", 1, 12, 3), ("A", 1, 12, None)]),
    "dynamic=True": (True, [("A", 1, 4, None), ("B", 1, 4, None)]),
    "dynamic=False": (False, [("A", 1, 4, None), ("B", 1, 4, None), ("A", 1, 4, None)]),
    "offload: res A,B,A, 12 steps": (None, [("A", 1, 12, None), ("B", 1, 12, None),
                                            ("A", 1, 12, None)]),
    "lora: res A,B,A, 12 steps": (None, [("A", 1, 12, None), ("B", 1, 12, None),
                                         ("A", 1, 12, None)]),
}


def prepare(tiny, scenario: str, compiled: bool) -> bool:
    """Apply the scenario's setting to ``tiny`` (``compiled``: the copy that will be compiled);
    True when the transformers must be compiled in place."""
    if scenario.startswith("lora:"):
        from tests.pipelines.test_lora import lora_state_dict

        for name in tiny.transformers:
            module = getattr(tiny.pipe, name)
            module.load_lora_adapter(lora_state_dict(module, 1), prefix="transformer",
                                     adapter_name="style")
    if scenario.startswith("offload:") and compiled:
        tiny.pipe.enable_model_cpu_offload(device="cpu")
        return True
    return False


def play(tiny, calls):
    out = None
    for size, batch, steps, interrupt in calls:
        extra = {"callback_on_step_end": factory.interrupt_after(interrupt)} if interrupt else {}
        out = tiny.run(size, batch, steps, **extra)
    return out


def where(error: BaseException) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "/pc_compile/" in f.filename]
    frame = (ours or frames)[-1]
    path = frame.filename.split("/pc_compile/")[-1] if ours else frame.filename.split("/")[-1]
    return f"{path}:{frame.lineno} {frame.name}"


def compiles() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def run_cell(pipeline, scheduler, scenario, backend, preset, reference=None):
    dynamic, calls = SCENARIOS[scenario]
    inductor = scenario.endswith("/inductor")
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    tiny = factory.build(pipeline, scheduler)
    in_place = prepare(tiny, scenario, compiled=True)
    options = None
    if backend == "precisecache":
        options = {"preset": preset, "piece_compiler": "inductor" if inductor else "eager"}
    compiled = factory.compile_transformers(tiny, backend, options, dynamic, in_place)
    start = time.perf_counter()
    row = dict(pipeline=pipeline, scheduler=scheduler, scenario=scenario, backend=backend,
               preset=preset)
    try:
        out = play(tiny, calls)
        row["result"] = "pass"
        if reference is not None:
            row["error"] = float((out - reference).abs().max() / reference.abs().max())
    except Exception as error:  # noqa: BLE001 - recorded in the matrix
        row["result"] = f"{type(error).__name__}: {str(error).splitlines()[0][:90]} @ " \
                        f"{where(error)}"
    row["seconds"] = time.perf_counter() - start
    row["compiles"] = compiles()
    if backend == "precisecache":
        try:
            fractions = [pc_compile.stats(c)["compute_fraction"] for c in compiled.values()]
            row["compute_fraction"] = max(fractions)
            row["steps"] = sum(pc_compile.stats(c)["steps"] for c in compiled.values())
        except ValueError:
            row["compute_fraction"] = None
    return row


def reference_output(pipeline, scheduler, scenario):
    tiny = factory.build(pipeline, scheduler)
    prepare(tiny, scenario, compiled=False)
    return play(tiny, SCENARIOS[scenario][1])


def matrix(cases, scenarios, presets):
    rows = []
    for scenario in scenarios:
        for pipeline, scheduler, only in cases:
            if only is not None and scenario not in only:
                continue
            try:
                reference = reference_output(pipeline, scheduler, scenario)
            except Exception:  # noqa: BLE001
                reference = None
            rows.append(run_cell(pipeline, scheduler, scenario, "eager", "plain", reference))
            for preset in presets:
                rows.append(run_cell(pipeline, scheduler, scenario, "precisecache", preset,
                                     reference))
            print(table(rows[-1 - len(presets):], header=False), flush=True)
    return rows


def table(rows, header=True):
    lines = []
    if header:
        lines += ["| pipeline | scheduler | scenario | backend / preset | result | rel. error "
                  "| compute_fraction | Dynamo compiles | s |",
                  "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        error = f"{r['error']:.1e}" if r.get("error") is not None else ""
        fraction = r.get("compute_fraction")
        fraction = f"{fraction:.3f}" if fraction is not None else ""
        who = "torch.compile" if r["backend"] != "precisecache" else r["preset"]
        lines.append(f"| {r['pipeline']} | {r['scheduler']} | {r['scenario']} | {who} | "
                     f"{r['result']} | {error} | {fraction} | {r['compiles']} | "
                     f"{r['seconds']:.1f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipelines", default=None)
    parser.add_argument("--scenarios", default=None)
    parser.add_argument("--presets", default="off,turbo")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    cases = CASES
    if args.pipelines:
        wanted = args.pipelines.split(",")
        cases = [c for c in CASES if c[0] in wanted or f"{c[0]}:{c[1]}" in wanted]
        cases = [(p, s, None if f"{p}:{s}" in wanted else only) for p, s, only in cases]
    scenarios = args.scenarios.split(";") if args.scenarios else list(SCENARIOS)
    rows = matrix(cases, scenarios, args.presets.split(","))
    text = table(rows)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()


def resolutions_in_a_row(count: int = 6, preset: str = "flash", pipeline: str = "wan",
                         dynamic=None, steps: int = 8):
    """Dynamo compiles for ``count`` resolutions in a row of ``steps`` steps each, plain
    torch.compile against ours: (unique graphs, frames Dynamo gave up on, calls of our graphs)
    per backend. The default preset and step count leave free steps, so the probe runs at
    every resolution (a schedule too short to pay for the probe does not run it)."""
    sizes = [(32 + 16 * i, 112 - 16 * i, 9) for i in range(count)]
    result = {}
    for backend in ("eager", "precisecache"):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        tiny = factory.build(pipeline)
        tiny.sizes = {str(i): size for i, size in enumerate(sizes)}
        options = {"preset": preset, "piece_compiler": "eager"} \
            if backend == "precisecache" else None
        compiled = factory.compile_transformers(tiny, backend, options, dynamic)
        per_call = []
        for i in range(count):
            before = compiles()
            tiny.run(str(i), 1, steps)
            per_call.append(compiles() - before)
        counters = torch._dynamo.utils.counters
        calls = probes = None
        if backend == "precisecache":
            stats = pc_compile.stats(compiled["transformer"])
            calls, probes = stats["steps"], stats["probe_evals"]
        result[backend] = dict(per_resolution=per_call, total=compiles(),
                               limit_hit=dict(counters["recompile_limit"]) or None,
                               cached_calls=calls, expected_calls=count * 2 * steps,
                               probe_evals=probes)
    return result
