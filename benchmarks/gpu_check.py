r"""Every GPU target of DESIGN.md ("What fast means here") measured in one process, one run.

On a Wan2.1-1.3B-shaped WanTransformer3DModel with random weights (30 blocks, 12 heads x 128,
ffn 8960, text 4096; latent 1x16x21x60x104 = 480x832, 81 frames; 512 text tokens; bf16), each
configuration runs a pipeline-shaped generation (``benchmarks/loop.py``: flow-matching Euler,
timestep as a device tensor, guidance as two calls per step inside ``cache_context``): plain
``torch.compile``, then the precisecache presets off, turbo, flash, base, sencache and bwcache,
each also with ``mode="reduce-overhead"`` (plain: Inductor's CUDA-graph trees; ours through
``pc_compile.backend(preset=...)``, since torch.compile takes ``options`` or ``mode``, not
both). Per configuration: one call (compiles), a warm generation, then the timed generation
(CUDA events and synchronisation around the whole of it). Reported, side by side:

* step time and its ratio to plain torch.compile of the same mode (targets: off <= 1.02x);
* the realised ``compute_fraction`` (``pc_compile.stats``) and the ratio of the step time to
  the ideal time, plain step time x compute fraction (target <= 1.03x);
* the probe's share of a step: one plain compiled forward (and an eager one) on the probe-sized
  latent (2x time, 4x4 space, as the backend sizes it) over one plain call (target <= 2.5%);
* host synchronisations per step (``torch.cuda.set_sync_debug_mode("warn")``, warnings counted
  per call) and host reads per step (``tests/host_reads.py``), target <= 1;
* compile time (first call + what the warm generation spent beyond a timed one) against plain;
* peak memory (``torch.cuda.max_memory_allocated``, reset before the timed generation) against
  plain (target <= 1.15x);
* the parity of preset off with plain (max abs and relative difference of the final latents),
  and every configuration's relative difference to plain.

Configurations run in order of importance and each is skipped, with a note, when the time left
of ``--budget-s`` is less than the longest one so far took; the JSON and the markdown table are
rewritten after every configuration, so a run cut short still leaves what it measured.

GPU command (the device machine has torch 2.11 and no diffusers: ``benchmarks/gpu_wheels.sh``
downloads the diffusers 0.42.1 wheel, 6 MB, into ``.whl/``, which .gitignore ignores; what it
imports is on the image). Once, here, in the repository root::

    bash benchmarks/gpu_wheels.sh

then run, with ``carry: [".whl"]`` and ``timeout_s: 560``::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit; \
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --budget-s 450 2>&1 \
        | tee $OUT/gpu_check.log

(``--size small`` when memory or time is short; ``--steps`` to change the 10 steps.) The files
come back under ``$OUT``: ``gpu_check.json``, ``gpu_check.md``, the log. Cold compilation
dominates at this size (each configuration traces the model again, and the presets with a probe
trace and compile it a second time at the probe's shape), so one 8-minute run measures the
first configurations of ``ORDER``; a second run can take the rest, with its baselines:
``--configs plain plain-ro base sencache bwcache base-ro sencache-ro bwcache-ro``.

CPU smoke run (what CI runs, ``benchmarks/tests/test_gpu_check.py``): ``--cpu-smoke``, a tiny
Wan in float32, few steps, the eager compiler, no CUDA call.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import math
import os
import sys
import tempfile
import time
import traceback
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from benchmarks.loop import WAN_SIZES, Loop, WanSize, build_wan, make_inputs  # noqa: E402

PRESETS = ("off", "turbo", "flash", "base", "sencache", "bwcache")
# Run order: what the targets need most first, so that a budget cut loses the least.
ORDER = (
    "plain", "off", "turbo", "flash", "probe",
    "plain-ro", "off-ro", "turbo-ro", "flash-ro",
    "base", "sencache", "bwcache", "base-ro", "sencache-ro", "bwcache-ro",
)
TARGETS = {"off_ratio": 1.02, "ideal_ratio": 1.03, "probe_share": 0.025, "syncs_per_step": 1.0,
           "peak_ratio": 1.15, "compile_ratio": 1.0}


# -- the run's environment -----------------------------------------------------------------------


class Device:
    """Timing, memory and synchronisation counting on CUDA; wall clock only on a CPU."""

    def __init__(self, name: str):
        self.name = name
        self.cuda = name == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def timed(self, out: dict, key: str):
        """Seconds of the block into ``out[key]``: CUDA events (synchronised) or wall clock."""
        self.sync()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            yield
            end.record()
            end.synchronize()
            out[key] = start.elapsed_time(end) / 1000.0
        else:
            begin = time.perf_counter()
            yield
            out[key] = time.perf_counter() - begin

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def peak_bytes(self) -> int | None:
        return torch.cuda.max_memory_allocated() if self.cuda else None

    def allocated(self) -> int | None:
        return torch.cuda.memory_allocated() if self.cuda else None

    @contextlib.contextmanager
    def sync_warnings(self, caught: list):
        """Collect the warnings of the block into ``caught``; on CUDA with the sync debug mode
        on, so that every synchronising operation warns."""
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            if self.cuda:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                yield records
            finally:
                if self.cuda:
                    torch.cuda.set_sync_debug_mode(0)
                caught.extend(records)

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def is_sync_warning(w) -> bool:
    return "synchroniz" in str(w.message)


def fresh_dynamo() -> None:
    torch._dynamo.reset()
    with contextlib.suppress(Exception):
        from torch._inductor import cudagraph_trees

        cudagraph_trees.reset_cudagraph_trees()


# -- configurations ------------------------------------------------------------------------------


def compile_config(model, label: str, compiler: str):
    """``(compiled model, preset or None, mode)`` for a configuration label."""
    import pc_compile

    mode = "reduce-overhead" if label.endswith("-ro") else None
    name = label[:-3] if mode else label
    if name == "plain":
        if compiler == "eager":
            return torch.compile(model, backend="eager", mode=mode), None, mode
        return torch.compile(model, mode=mode), None, mode
    options = {"preset": name}
    if mode is not None:
        options["cuda_graphs"] = True  # the -ro rows measure the pieces under CUDA graphs
    if compiler == "eager":
        options["piece_compiler"] = "eager"
    if mode is None and "precisecache" in torch._dynamo.list_backends(exclude_tags=()):
        return torch.compile(model, backend="precisecache", options=options), name, mode
    # torch.compile takes options or a mode, not both; and where the package is not installed
    # (the device machine runs it from the checkout) the entry point is not registered.
    return torch.compile(model, backend=pc_compile.backend(**options), mode=mode), name, mode


def probe_shape(size: WanSize, factors=(2, 4, 4), min_tokens: int = 4) -> tuple:
    """The probe latent's shape as the backend sizes it (``runtime/probe.py``'s rule: each
    factor rounded to whole patches, at least two frames, at least ``min_tokens`` per frame)."""
    b, c, frames, height, width = size.latent
    pt, ph, pw = size.config["patch_size"]

    def scaled(n, factor, patch):
        return min(n, max(1, round(n / factor / patch)) * patch)

    f = scaled(frames, factors[0], pt)
    if frames >= 2:
        f = max(f, min(frames, 2 * pt))
    sh, sw = float(factors[1]), float(factors[2])
    while True:
        h, w = scaled(height, sh, ph), scaled(width, sw, pw)
        if (h // ph) * (w // pw) >= min_tokens or (sh <= 1 and sw <= 1):
            return (b, c, f, h, w)
        sh, sw = max(1.0, sh / math.sqrt(2)), max(1.0, sw / math.sqrt(2))


def dynamo_graphs() -> int:
    """Graphs Dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def compare(x: torch.Tensor, ref: torch.Tensor) -> dict:
    x, ref = x.double(), ref.double()
    return {"max_abs": (x - ref).abs().max().item(),
            "rel": ((x - ref).norm() / ref.norm().clamp_min(1e-30)).item()}


# -- one configuration ---------------------------------------------------------------------------


def run_generation_config(label, model, inputs, args, device: Device, results: dict) -> dict:
    import pc_compile

    fresh_dynamo()
    device.free()
    row: dict = {"config": label}
    begin = time.perf_counter()
    compiled, preset, mode = compile_config(model, label, args.compiler)
    row.update(preset=preset, mode=mode or "default")
    loop = Loop(steps=args.steps, mark_step=mode is not None)
    with torch.no_grad():
        first = Loop(steps=1, mark_step=mode is not None)
        with device.timed(row, "first_call_s"):
            first(compiled, inputs)
        if preset is not None:
            # The warm generation starts at the timestep the first call had: without a reset
            # it would read as another evaluation of that step (as FlowMatchHeun's are).
            pc_compile.reset(compiled)
        with device.timed(row, "warm_gen_s"):
            warm = loop(compiled, inputs)
        if preset is not None:
            pc_compile.reset(compiled)
        device.reset_peak()
        base_bytes = device.allocated()

        from tests.host_reads import HostReads

        reads = HostReads(stack_depth=3)
        caught: list = []
        calls: list = []  # (step, branch, syncs in the call)

        @contextlib.contextmanager
        def around(step, branch):
            before = sum(map(is_sync_warning, records))
            with reads.scope(step=step, branch=branch):
                yield
            calls.append((step, branch, sum(map(is_sync_warning, records)) - before))

        timed_loop = Loop(steps=args.steps, mark_step=mode is not None, around=around)
        graphs_before = dynamo_graphs()
        with device.sync_warnings(caught) as records, reads:
            with device.timed(row, "timed_gen_s"):
                final = timed_loop(compiled, inputs)
        # Dynamo graphs compiled during the timed generation (a recompilation: then the
        # timing holds compilation, and the compiled program may not be the measured one).
        row["graphs_compiled_in_timed"] = dynamo_graphs() - graphs_before
    steps = args.steps
    row["step_ms"] = 1000.0 * row["timed_gen_s"] / steps
    row["call_ms"] = row["step_ms"] / 2
    row["compile_s"] = (row["first_call_s"] + row["warm_gen_s"] - row["timed_gen_s"]
                        - row["timed_gen_s"] / (2 * steps))
    row["host_reads_per_step"] = reads.count / steps
    row["host_reads_uncond_per_step"] = len(reads.where(branch="uncond")) / steps
    row["host_read_sites"] = dict(reads.sites(callers=2).most_common(8))
    if device.cuda:
        syncs = sum(map(is_sync_warning, caught))
        row["syncs_per_step"] = syncs / steps
        row["syncs_uncond_per_step"] = sum(n for _, b, n in calls if b == "uncond") / steps
        row["syncs_outside_calls"] = syncs - sum(n for *_, n in calls)
    else:
        row["syncs_per_step"] = None  # a CPU never synchronises: see host reads
    others = [str(w.message)[:300] for w in caught if not is_sync_warning(w)]
    if others:
        row["warnings"] = sorted(set(others))[:5]
    if row["graphs_compiled_in_timed"]:
        row.setdefault("warnings", []).append(
            f"{row['graphs_compiled_in_timed']} graph(s) compiled during the timed generation")
    peak = device.peak_bytes()
    if peak is not None:
        row["peak_gib"] = peak / 2**30
        row["peak_over_start_gib"] = (peak - base_bytes) / 2**30
    if preset is not None:
        s = pc_compile.stats(compiled)
        row.update(compute_fraction=s["compute_fraction"], full_steps=s["full_steps"],
                   skipped_steps=s["skipped_steps"], stat_steps=s["steps"],
                   probe_evals=s["probe_evals"], block_bypasses=s["block_bypasses"],
                   streams=s["streams"], kept_mib=s["kept_bytes"] / 2**20)
    else:
        row["compute_fraction"] = 1.0
    row["self_rel"] = compare(final, warm)["rel"]  # warm vs timed generation: repeatability
    results.setdefault("_finals", {})[label] = final.detach().to("cpu", torch.float32)
    row["elapsed_s"] = time.perf_counter() - begin
    del compiled
    return row


def run_probe(model, size, inputs, args, device: Device, plain_call_ms: float | None) -> dict:
    """The probe's cost: the plain network on the probe-sized latent, compiled and eager."""
    fresh_dynamo()
    device.free()
    row: dict = {"config": "probe", "mode": "default"}
    begin = time.perf_counter()
    shape = probe_shape(size)
    row["probe_latent"] = list(shape)
    row["token_ratio"] = (shape[2] * shape[3] * shape[4]) / math.prod(size.latent[2:])
    g = torch.Generator().manual_seed(7)
    latent = torch.randn(*shape, generator=g).to(inputs.noise.device, inputs.cond.dtype)
    t = torch.full((1,), 500.0, device=latent.device)
    call = dict(hidden_states=latent, timestep=t, encoder_hidden_states=inputs.cond,
                return_dict=False)
    repeats = args.probe_repeats
    with torch.no_grad():
        for name in ("eager", "compiled", "compiled_ro"):
            mode = "reduce-overhead" if name == "compiled_ro" else None
            fn = model
            if name != "eager":
                fresh_dynamo()
                backend = "eager" if args.compiler == "eager" else "inductor"
                fn = torch.compile(model, backend=backend, mode=mode, dynamic=False)

            def once(fn=fn, mode=mode):
                if mode is not None:
                    torch.compiler.cudagraph_mark_step_begin()
                fn(**call)

            if name != "eager":
                with device.timed(row, f"{name}_compile_s"):
                    once()
            for _ in range(3):
                once()
            with device.timed(row, f"{name}_total_s"):
                for _ in range(repeats):
                    once()
            row[f"{name}_ms"] = 1000.0 * row.pop(f"{name}_total_s") / repeats
        row["compile_s"] = row["compiled_compile_s"]
    if plain_call_ms:
        for name in ("compiled", "compiled_ro", "eager"):
            row[f"share_{name}"] = row[f"{name}_ms"] / plain_call_ms
    row["elapsed_s"] = time.perf_counter() - begin
    return row


# -- derived numbers and the report --------------------------------------------------------------


def derive(rows: dict) -> None:
    """Ratios against plain of the same mode (and, for reduce-overhead, plain default)."""
    finals = rows.get("_finals", {})
    for label, row in rows.items():
        if label.startswith("_") or row.get("status") != "ok" or label == "probe":
            continue
        plain_label = "plain-ro" if row["mode"] == "reduce-overhead" else "plain"
        plain = rows.get(plain_label)
        if plain is None or plain.get("status") != "ok":
            plain_label, plain = "plain", rows.get("plain")
        if plain is None or plain.get("status") != "ok":
            continue
        row["baseline"] = plain_label
        row["ratio"] = row["step_ms"] / plain["step_ms"]
        row["ideal_ms"] = plain["step_ms"] * row["compute_fraction"]
        row["ideal_ratio"] = row["step_ms"] / row["ideal_ms"]
        if row["mode"] == "reduce-overhead" and rows.get("plain", {}).get("status") == "ok":
            row["ratio_vs_plain_default"] = row["step_ms"] / rows["plain"]["step_ms"]
        if plain.get("compile_s", 0) > 0:
            row["compile_ratio"] = row["compile_s"] / plain["compile_s"]
        if "peak_gib" in row and "peak_gib" in plain:
            row["peak_ratio"] = row["peak_gib"] / plain["peak_gib"]
        if label in finals and plain_label in finals:
            diff = compare(finals[label], finals[plain_label])
            row["rel_vs_plain"], row["max_abs_vs_plain"] = diff["rel"], diff["max_abs"]
    probe = rows.get("probe")
    if probe and probe.get("status") == "ok" and "share_compiled" not in probe:
        plain = rows.get("plain")
        if plain and plain.get("status") == "ok":
            for name in ("compiled", "compiled_ro", "eager"):
                probe[f"share_{name}"] = probe[f"{name}_ms"] / plain["call_ms"]


def _f(v, spec=".3f", none="-") -> str:
    if v is None:
        return none
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def markdown(report: dict) -> str:
    rows = report["rows"]
    meta = report["meta"]
    lines = [
        f"# gpu_check: {meta['size']} ({meta['size_note']}), {meta['steps']} steps, "
        f"{meta['dtype']}, {meta['device_name']}",
        "",
        f"{meta['date']}; torch {meta['torch']}, diffusers {meta['diffusers']}; compiler "
        f"{meta['compiler']}; command `{meta['command']}`",
        "",
        "| config | mode | step ms | x plain | compute fraction | x ideal | host reads/step "
        "| syncs/step | compile s | x plain compile | peak GiB | x plain peak | kept MiB "
        "| rel diff vs plain | elapsed s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label in ORDER:
        row = rows.get(label)
        if row is None:
            continue
        if row.get("status") != "ok" or label == "probe":
            if label != "probe":
                lines.append(f"| {label} | {row.get('status')}: {row.get('note', '')} "
                             "| | | | | | | | | | | | | |")
            continue
        lines.append(
            f"| {label} | {row['mode']} | {_f(row['step_ms'], '.1f')} | {_f(row.get('ratio'))} "
            f"| {_f(row.get('compute_fraction'))} | {_f(row.get('ideal_ratio'))} "
            f"| {_f(row['host_reads_per_step'], '.2f')} | {_f(row.get('syncs_per_step'), '.2f')} "
            f"| {_f(row['compile_s'], '.1f')} | {_f(row.get('compile_ratio'), '.2f')} "
            f"| {_f(row.get('peak_gib'), '.2f')} | {_f(row.get('peak_ratio'))} "
            f"| {_f(row.get('kept_mib'), '.1f')} | {_f(row.get('rel_vs_plain'), '.2e')} "
            f"| {_f(row['elapsed_s'], '.0f')} |"
        )
    lines.append("")
    probe = rows.get("probe", {})
    if probe.get("status") == "ok":
        lines.append(
            f"Probe (latent {probe['probe_latent']}, {probe['token_ratio']:.1%} of the tokens): "
            f"compiled {probe['compiled_ms']:.2f} ms ({_f(probe.get('share_compiled'), '.2%')} "
            f"of a plain call), with CUDA graphs (reduce-overhead) {probe['compiled_ro_ms']:.2f} "
            f"ms ({_f(probe.get('share_compiled_ro'), '.2%')}), eager {probe['eager_ms']:.2f} ms "
            f"({_f(probe.get('share_eager'), '.2%')}); compile {probe['compile_s']:.1f} s."
        )
    elif probe:
        lines.append(f"Probe: {probe.get('status')}: {probe.get('note', '')}")
    off, plain = rows.get("off", {}), rows.get("plain", {})
    if off.get("status") == "ok" and "rel_vs_plain" in off:
        lines.append(f"Parity of preset off with plain torch.compile (final latents): max abs "
                     f"{off['max_abs_vs_plain']:.3e}, relative {off['rel_vs_plain']:.3e}; plain's "
                     f"own warm vs timed generation: relative {plain.get('self_rel', 0):.3e}.")
    lines += ["", "Targets (DESIGN.md):", ""]
    lines += [f"- {line}" for line in report["targets"]]
    notes = report.get("notes") or []
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def targets(rows: dict) -> list[str]:
    """One line per target: the measured values against the bar."""
    out = []

    def ok(label):
        return rows.get(label, {}).get("status") == "ok"

    def mark(value, bar):
        return "n/a" if value is None else ("PASS" if value <= bar else "MISS")

    for label in ("off", "off-ro"):
        if ok(label):
            v = rows[label].get("ratio")
            out.append(f"{label} within {TARGETS['off_ratio']}x of {rows[label].get('baseline')}:"
                       f" {_f(v)} {mark(v, TARGETS['off_ratio'])}")
    for label in ORDER:
        if ok(label) and rows[label].get("preset") not in (None, "off"):
            v = rows[label].get("ideal_ratio")
            out.append(f"{label} within {TARGETS['ideal_ratio']}x of its ideal time: {_f(v)} "
                       f"{mark(v, TARGETS['ideal_ratio'])}")
    if ok("probe"):
        for name in ("compiled", "compiled_ro"):
            v = rows["probe"].get(f"share_{name}")
            out.append(f"probe ({name}) within {TARGETS['probe_share']:.1%} of a step: "
                       f"{_f(v, '.2%')} {mark(v, TARGETS['probe_share'])}")
    for label in ORDER:
        if ok(label) and rows[label].get("preset") is not None:
            r = rows[label]
            v = r.get("syncs_per_step")
            v = v if v is not None else r.get("host_reads_per_step")
            what = "syncs" if r.get("syncs_per_step") is not None else "host reads (CPU)"
            out.append(f"{label} at most 1 {what} per step: {_f(v, '.2f')} {mark(v, 1.0)}; "
                       f"peak {_f(r.get('peak_ratio'))}x plain "
                       f"{mark(r.get('peak_ratio'), TARGETS['peak_ratio'])}; compile "
                       f"{_f(r.get('compile_ratio'), '.2f')}x plain "
                       f"{mark(r.get('compile_ratio'), TARGETS['compile_ratio'])}")
    return out


def write(report: dict, out_dir: str) -> None:
    rows = {k: v for k, v in report["rows"].items() if not k.startswith("_")}
    report = dict(report, rows=rows)
    report["targets"] = targets(rows)
    with open(os.path.join(out_dir, "gpu_check.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(os.path.join(out_dir, "gpu_check.md"), "w") as f:
        f.write(markdown(report))


# -- main ----------------------------------------------------------------------------------------


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default=None, choices=sorted(WAN_SIZES),
                   help="model and latent (default 1.3b; tiny with --cpu-smoke)")
    p.add_argument("--steps", type=int, default=None, help="Euler steps (default 16; 6 smoke)")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="skip the configurations that would not finish inside this many seconds")
    p.add_argument("--out", default=None, help="output folder (default $OUT, else gpu_check_out)")
    p.add_argument("--configs", nargs="*", default=None, help=f"subset of {', '.join(ORDER)}")
    p.add_argument("--no-reduce-overhead", action="store_true", help="skip the -ro configs")
    p.add_argument("--compiler", default=None, choices=("inductor", "eager"),
                   help="inductor (default) or eager (no compilation: plumbing checks)")
    p.add_argument("--probe-repeats", type=int, default=None)
    p.add_argument("--keep-inductor-cache", action="store_true",
                   help="use the usual Inductor cache folder (default: a fresh one, so that "
                   "compile times are cold for the first configuration that needs each graph)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="tiny Wan, float32, CPU, few steps, eager compiler: a plumbing check")
    args = p.parse_args(argv)
    if args.cpu_smoke:
        args.size = args.size or "tiny"
        args.steps = args.steps or 6
        args.compiler = args.compiler or "eager"
        args.probe_repeats = args.probe_repeats or 2
    args.size = args.size or "1.3b"
    # 16 steps: base, turbo and flash spend 0.63, 0.465 and 0.38 of them (compute budgets), so
    # the timed ratio against plain torch.compile shows what a budget buys.
    args.steps = args.steps or 16
    args.compiler = args.compiler or "inductor"
    args.probe_repeats = args.probe_repeats or 10
    args.out = args.out or os.environ.get("OUT") or "gpu_check_out"
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    start = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    if not args.keep_inductor_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="gpu_check_inductor_")
    if args.cpu_smoke:
        device = Device("cpu")
        # One thread: tiny ops on a busy machine otherwise wait at every thread barrier.
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run with --cpu-smoke for the CPU check")
        device = Device("cuda")
    dtype = torch.float32 if args.cpu_smoke else torch.bfloat16
    import diffusers

    with contextlib.suppress(Exception):
        diffusers.utils.logging.set_verbosity_error()
    size = WAN_SIZES[args.size]
    model = build_wan(size, device.name, dtype)
    inputs = make_inputs(size, device.name, dtype)
    configs = [c for c in ORDER if args.configs is None or c in args.configs]
    if args.no_reduce_overhead:
        configs = [c for c in configs if not c.endswith("-ro")]
    report = {
        "meta": {
            "size": args.size, "size_note": size.note, "latent": list(size.latent),
            "tokens": size.tokens, "text_tokens": size.text_tokens, "steps": args.steps,
            "dtype": str(dtype).replace("torch.", ""), "compiler": args.compiler,
            "device_name": torch.cuda.get_device_name() if device.cuda else "cpu",
            "torch": torch.__version__, "diffusers": diffusers.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["benchmarks/gpu_check.py", *(argv or sys.argv[1:])]),
            "budget_s": args.budget_s,
        },
        "rows": {},
        "notes": [],
    }
    rows = report["rows"]
    durations: list[float] = []
    print(f"gpu_check: {args.size} ({size.note}), {args.steps} steps, {report['meta']['dtype']}, "
          f"{report['meta']['device_name']}, configs {', '.join(configs)}", flush=True)
    for label in configs:
        elapsed = time.perf_counter() - start
        # The next configuration is assumed to take as long as the longest so far, the first
        # one (Inductor's and Triton's own start) left out once there are others.
        longest = max(durations[1:] or durations or [0.0])
        if elapsed + longest > args.budget_s:
            rows[label] = {"config": label, "status": "skipped",
                           "note": f"budget: {elapsed:.0f} s spent, the longest configuration "
                                   f"took {longest:.0f} s, budget {args.budget_s:.0f} s"}
            print(f"[{elapsed:6.0f} s] {label}: skipped (budget)", flush=True)
            write(report, args.out)
            continue
        try:
            if label == "probe":
                plain = rows.get("plain", {})
                row = run_probe(model, size, inputs, args, device,
                                plain.get("call_ms") if plain.get("status") == "ok" else None)
            else:
                row = run_generation_config(label, model, inputs, args, device, rows)
            row["status"] = "ok"
        except Exception as error:  # one configuration failing must not lose the others
            row = {"config": label, "status": "error",
                   "note": f"{type(error).__name__}: {str(error)[:300]}",
                   "traceback": traceback.format_exc()[-3000:]}
            device.free()
        rows[label] = row
        durations.append(row.get("elapsed_s", time.perf_counter() - start - elapsed))
        derive(rows)
        write(report, args.out)
        print(f"[{time.perf_counter() - start:6.0f} s] {label}: " + summary(row), flush=True)
    fresh_dynamo()
    derive(rows)
    report["meta"]["total_s"] = time.perf_counter() - start
    write(report, args.out)
    with open(os.path.join(args.out, "gpu_check.md")) as f:
        print("\n" + f.read(), flush=True)
    return report


def summary(row: dict) -> str:
    if row.get("status") != "ok":
        return f"{row.get('status')}: {row.get('note')}"
    if row["config"] == "probe":
        return (f"compiled {row['compiled_ms']:.2f} ms, reduce-overhead "
                f"{row['compiled_ro_ms']:.2f} ms, eager {row['eager_ms']:.2f} ms, share "
                f"{_f(row.get('share_compiled'), '.2%')} ({row['elapsed_s']:.0f} s)")
    return (f"step {row['step_ms']:.1f} ms, x plain {_f(row.get('ratio'))}, compute "
            f"{_f(row.get('compute_fraction'))}, x ideal {_f(row.get('ideal_ratio'))}, reads/step "
            f"{row['host_reads_per_step']:.2f}, syncs/step {_f(row.get('syncs_per_step'), '.2f')}, "
            f"compile {row['compile_s']:.1f} s ({row['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main()
