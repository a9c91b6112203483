"""``python -m benchmarks``: fidelity of caching methods on the reference models.

For every model x scheduler x step count, each prompt (class label + seed) is first generated
without caching (the reference); then every registered method is run over its sweep of settings on
the same prompts, and each row records the mean PSNR / SSIM against the reference, the compute
fraction (block evaluations over calls x blocks), the wall time per generation and how the
compute was counted. Output (``--out``, default ``bench_out/``): ``results.json``, ``pareto.png``
(PSNR against compute fraction per model) and ``schedule_<model>.png`` (which steps and blocks ran
for each method near 50% compute, and the method's metric against its threshold when it exposes
one).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from . import (
    counting,
    metrics,
    models,
    ours,  # noqa: F401  (registers the project's own methods)
    sampling,
)
from .methods import REGISTRY, Env

PSNR_CAP = 100.0  # PSNR of identical outputs (infinite) is written as this value

DEFAULTS = {
    "models": ["wan-tiny", "cogvideox-tiny"],
    "schedulers": ["euler", "unipc"],
    "steps": [30],
    "prompts": 1,
}

# Named sampling settings (``--setting``): guidance scale, timestep shift and default step
# counts. ``--guidance``, ``--shift`` and ``--steps`` override a setting's values.
#   default: the setting every earlier result was measured in (guidance 5, shift 3, 30 steps).
#   hard: stronger guidance, a larger shift and fewer, larger steps, chosen with
#     ``python -m benchmarks.hardness`` so that 50% uniform skipping falls below about 35 dB
#     PSNR on the reference models (BENCHMARKS.md, "A harder setting").
SETTINGS: dict[str, dict] = {
    "default": {"guidance": 5.0, "shift": 3.0, "steps": [30]},
    "hard": {"guidance": 12.0, "shift": 6.0, "steps": [20]},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None, help="comma list (default: %s)" %
                   ",".join(DEFAULTS["models"]))
    p.add_argument("--schedulers", default=None, help="comma list of euler,unipc,dpm")
    p.add_argument("--steps", default=None,
                   help="comma list of step counts (default: the setting's, 30 for default)")
    p.add_argument("--methods", default=None, help="comma list (default: all registered)")
    p.add_argument("--prompts", type=int, default=None, help="prompts (class, seed) per setting")
    p.add_argument("--setting", default="default", choices=sorted(SETTINGS),
                   help="named sampling setting: guidance, shift and step counts (see SETTINGS)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale (default: the setting's)")
    p.add_argument("--shift", type=float, default=None,
                   help="the schedulers' timestep shift (default: the setting's)")
    p.add_argument("--full", action="store_true", help="use each method's full sweep")
    p.add_argument("--quick", action="store_true",
                   help="tiny run for tests: smallest model, euler, 6 steps, 1 prompt, "
                   "3 methods, 2 settings each")
    p.add_argument("--out", default="bench_out")
    p.add_argument("--models-dir", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--schedule-method", default=None,
                   help="method drawn first in the schedule plot (default teacache-style)")
    p.add_argument("--no-plots", action="store_true")
    return p.parse_args(argv)


def _csv(s, cast=str):
    return [cast(x) for x in s.split(",") if x]


def resolve(args) -> dict:
    if args.quick:
        cfg = {"models": ["cogvideox-tiny"], "schedulers": ["euler"], "steps": [6],
               "prompts": 1, "methods": ["uniform", "teacache-style", "first-block-cache"],
               "max_settings": 2}
    else:
        cfg = dict(DEFAULTS, methods=list(REGISTRY), max_settings=None)
    setting = SETTINGS[getattr(args, "setting", None) or "default"]
    if not args.quick:
        cfg["steps"] = list(setting["steps"])
    cfg["setting"] = getattr(args, "setting", None) or "default"
    cfg["guidance"] = setting["guidance"] if args.guidance is None else args.guidance
    cfg["shift"] = setting["shift"] if getattr(args, "shift", None) is None else args.shift
    if args.models:
        cfg["models"] = _csv(args.models)
    if args.schedulers:
        cfg["schedulers"] = _csv(args.schedulers)
    if args.steps:
        cfg["steps"] = _csv(args.steps, int)
    if args.methods:
        cfg["methods"] = _csv(args.methods)
    if args.prompts:
        cfg["prompts"] = args.prompts
    bad = [s for s in cfg["schedulers"] if s not in sampling.SCHEDULERS]
    if bad:
        raise SystemExit(f"unknown schedulers {bad}; choose from {list(sampling.SCHEDULERS)}")
    unknown = [m for m in cfg["methods"] if m not in REGISTRY]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; registered: {sorted(REGISTRY)}")
    return cfg


def prompts_for(info: dict, n: int) -> list[tuple[int, int]]:
    """``n`` (label, seed) pairs spread over the classes, fixed."""
    k = info["num_classes"]
    labels = [(i * 5) % k for i in range(n)]  # 0, 5, 2, 7, ...: both palettes, several shapes
    return [(lab, 100 + i) for i, lab in enumerate(labels)]


def run(args, command: str | None = None) -> dict:
    """Run the benchmark ``args`` describe; ``command`` is recorded as the run's command
    (default: this process's command line)."""
    from tqdm import tqdm

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = resolve(args)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    loaded = {}
    for name in cfg["models"]:
        model, info = models.load_reference(name, models_dir=args.models_dir)
        loaded[name] = (model, info)

    def settings(m):
        s = REGISTRY[m].settings(args.full)
        return s[: cfg["max_settings"]] if cfg["max_settings"] else s

    n_prompts = cfg["prompts"]
    total = 0
    for name, (_, info) in loaded.items():
        meths = [m for m in cfg["methods"] if REGISTRY[m].supports(info)]
        per = 1 + sum(len(settings(m)) for m in meths)
        total += per * n_prompts * len(cfg["schedulers"]) * len(cfg["steps"])
    bar = tqdm(total=total, desc="bench", unit="gen", mininterval=2)

    rows, schedules = [], []
    t_start = time.time()
    for name, (model, info) in loaded.items():
        blocks = getattr(model, info["blocks_attr"])
        c, f, h, w = info["latent_shape"]
        example = {
            "hidden_states": models.to_layout(torch.zeros(1, c, f, h, w), info["layout"]),
            "timestep": torch.tensor([500.0]),
            "encoder_hidden_states": models.encoder_hidden_states(info, [0]),
            "return_dict": False,
        }
        weights = counting.part_weights(model, blocks, example)
        prompts = prompts_for(info, n_prompts)
        cache: dict = {}
        for sched in cfg["schedulers"]:
            for steps in cfg["steps"]:
                refs, ref_walls = [], []
                for label, seed in prompts:
                    t0 = time.perf_counter()
                    refs.append(sampling.sample(sampling.plain(model), info, label, seed, sched,
                                                steps, cfg["guidance"], shift=cfg["shift"]))
                    ref_walls.append(time.perf_counter() - t0)
                    bar.update(1)
                base = {"model": name, "arch": info["arch"], "scheduler": sched, "steps": steps,
                        "bench_setting": cfg["setting"], "guidance": cfg["guidance"],
                        "shift": cfg["shift"], "blocks": info["num_blocks"],
                        "prompts": [list(p) for p in prompts]}
                ref_wall = sum(ref_walls) / len(ref_walls)
                rows.append(dict(base, method="none", setting=None, setting_name="",
                                 compute_fraction=1.0, psnr=PSNR_CAP, ssim=1.0,
                                 wall_s=ref_wall, ref_wall_s=ref_wall, mode="eager",
                                 counted_by="all blocks"))
                env = Env(info=info, scheduler=sched, steps=steps, base_model=model, cache=cache,
                          guidance=cfg["guidance"], shift=cfg["shift"])
                for mname in cfg["methods"]:
                    meth = REGISTRY[mname]
                    if not meth.supports(info):
                        continue
                    for setting in settings(mname):
                        row, sched_rec = run_setting(meth, setting, env, model, blocks, weights,
                                                     prompts, refs, bar)
                        rows.append(dict(base, **row, ref_wall_s=ref_wall,
                                         cfg_calls="batched" if meth.batched_cfg else "separate"))
                        schedules.append(dict(base, method=mname, setting=setting,
                                              compute_fraction=row["compute_fraction"],
                                              **sched_rec))
    bar.close()
    result = {
        "meta": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": command or "python -m benchmarks " + " ".join(sys.argv[1:]),
            "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} torch threads",
            "torch": torch.__version__,
            "diffusers": _diffusers_version(),
            "setting": cfg["setting"],
            "guidance": cfg["guidance"],
            "shift": cfg["shift"],
            "psnr_cap": PSNR_CAP,
            "total_wall_s": round(time.time() - t_start, 1),
            "config": {k: v for k, v in cfg.items()},
            "methods": {m: {"mode": REGISTRY[m].mode, "notes": REGISTRY[m].notes,
                            "setting_name": REGISTRY[m].setting_name} for m in cfg["methods"]},
        },
        "rows": rows,
    }
    (out_dir / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "schedules.json").write_text(json.dumps(schedules) + "\n")
    if not args.no_plots:
        from . import plots

        plots.pareto(rows, out_dir / "pareto.png")
        first = args.schedule_method or "teacache-style"
        for name in loaded:
            plots.schedule(schedules, name, out_dir / f"schedule_{name}.png", first=first)
    return result


def run_setting(meth, setting, env, model, blocks, weights, prompts, refs, bar):
    mm = env.fresh_model()
    mblocks = getattr(mm, env.info["blocks_attr"])
    counter = None if meth.self_counted else counting.BlockCounter(mm, mblocks, weights)
    mrun = meth.make(mm, setting, env)
    per, record = [], {}
    for i, ((label, seed), ref) in enumerate(zip(prompts, refs)):
        mrun.reset()
        calls = []
        if counter is not None:
            counter.reset()

            def fn(hs, t, ehs, ctx, _f=mrun.fn):
                counter.begin_call(rows=hs.shape[0])
                out = _f(hs, t, ehs, ctx)
                calls.append((ctx.name, ctx.step_index, counter.end_call()))
                return out
        else:
            fn = mrun.fn
        t0 = time.perf_counter()
        x = sampling.sample(fn, env.info, label, seed, env.scheduler, env.steps, env.guidance,
                            batched_cfg=meth.batched_cfg, shift=env.shift)
        wall = time.perf_counter() - t0
        stats = mrun.stats()
        if counter is not None:
            cf = counter.compute_fraction()
        else:
            cf = float(stats["compute_fraction"])
        p = metrics.psnr(x, ref)
        per.append({"label": label, "seed": seed, "psnr": min(p, PSNR_CAP),
                    "ssim": metrics.ssim(x, ref), "compute_fraction": cf, "wall_s": wall})
        if i == 0:
            record = {"calls": calls, "trace": stats.get("trace", []),
                      "stats": {k: v for k, v in stats.items() if k != "trace"}}
        bar.update(1)
    n = len(per)
    row = {
        "method": meth.name,
        "setting": setting,
        "setting_name": meth.setting_name,
        "compute_fraction": sum(r["compute_fraction"] for r in per) / n,
        "psnr": sum(r["psnr"] for r in per) / n,
        "ssim": sum(r["ssim"] for r in per) / n,
        "wall_s": sum(r["wall_s"] for r in per) / n,
        "mode": meth.mode,
        "counted_by": "method stats" if counter is None else "block part hooks",
        "per_prompt": per,
    }
    if counter is not None:
        counter.remove()
    return row, _json_safe(record)


def _json_safe(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
    if isinstance(o, torch.Tensor):
        return _json_safe(o.tolist())
    return o


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def main(argv=None) -> None:
    args = parse_args(argv)
    res = run(args)
    print(f"wrote {Path(args.out) / 'results.json'} ({len(res['rows'])} rows, "
          f"{res['meta']['total_wall_s']:.0f}s)")
