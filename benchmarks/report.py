"""Markdown tables from a benchmark result.

    python -m benchmarks.report bench_out/results.json

Prints, per model x scheduler x steps, every row (method, setting, compute fraction, PSNR, SSIM,
wall time per generation, eager/compiled, how compute was counted), then a summary: for each
target compute fraction (default 50% and 37%) the method with the best PSNR among the rows whose
compute fraction is at most the target plus a tolerance (0.04, a bit more than one step in 30),
among the peers (eager rows) and among all rows; and each of the project's rows (compiled) against
uniform skipping at the same compute (interpolated) and the best peer at no more than 0.04 more
compute.

Several result files are merged (e.g. one run per scheduler). ``--prompts 5-7`` recomputes every
row's means over those prompts only (0-based, in the run's order; ``0-4,7`` also works), to
report prompts held out from a design choice apart from those that informed it.

Leave one model out: ``--held-out cogvideox-deep`` names the models that played no part in a
design choice; the comparisons are then printed twice, first for the design models (the others,
or those named by ``--design-models``) and then for the held-out ones, each with its own count of
settings where the project's rows meet the bar, so a choice tuned on some models is judged on one
it was not tuned on. ``--presets`` prints the preset comparison (``presets``): each preset's row
against its compute budget, uniform skipping with each reuse form and every peer interpolated at
the same compute.

Rows are grouped by model, scheduler, step count, guidance scale and shift (rows of result files
written before the guidance and shift were recorded per row take their file's guidance and shift
3).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path


def _fmt(x, nd=2):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


DEFAULT_GUIDANCE, DEFAULT_SHIFT = 5.0, 3.0


def group_key(r: dict) -> tuple:
    """The setting a row belongs to: model, scheduler, steps, guidance, shift."""
    return (r["model"], r["scheduler"], r["steps"], r.get("guidance", DEFAULT_GUIDANCE),
            r.get("shift", DEFAULT_SHIFT))


def group_label(key: tuple) -> str:
    model, sched, steps, guidance, shift = key
    extra = ""
    if (guidance, shift) != (DEFAULT_GUIDANCE, DEFAULT_SHIFT):
        extra = f", guidance {guidance:g}, shift {shift:g}"
    return f"{model}, {sched}, {steps} steps{extra}"


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    groups = defaultdict(list)
    for r in rows:
        groups[group_key(r)].append(r)
    return groups


def tables(res: dict) -> str:
    rows = res["rows"]
    cap = res.get("meta", {}).get("psnr_cap", 100.0)
    out = []
    for key, rs in _groups(rows).items():
        out.append(f"\n#### {group_label(key)}\n")
        out.append("| method | setting | compute | PSNR (dB) | SSIM | s / video | mode "
                   "| counted by |")
        out.append("|---|---|---:|---:|---:|---:|---|---|")
        for r in sorted(rs, key=lambda r: (r["method"] != "none", r["method"],
                                           -r["compute_fraction"])):
            setting = "" if r["setting"] is None else f"{r['setting_name']} {r['setting']}"
            psnr = "inf" if r["psnr"] >= cap else _fmt(r["psnr"])
            mode = r["mode"] + (" (batched CFG)" if r.get("cfg_calls") == "batched" else "")
            out.append(f"| {r['method']} | {setting} | {r['compute_fraction']:.3f} | {psnr} | "
                       f"{r['ssim']:.4f} | {r['wall_s']:.2f} | {mode} | {r['counted_by']} |")
    return "\n".join(out)


def best_at(res: dict, targets=(0.5, 0.37), tol: float = 0.04, modes=None) -> list[dict]:
    """Best-PSNR row per group and target; ``modes`` restricts to rows of those modes."""
    groups = _groups([r for r in res["rows"]
                      if r["method"] != "none" and (modes is None or r["mode"] in modes)])
    found = []
    for key, rs in groups.items():
        for t in targets:
            cand = [r for r in rs if r["compute_fraction"] <= t + tol]
            if cand:
                b = max(cand, key=lambda r: r["psnr"])
                found.append({"model": key[0], "scheduler": key[1], "steps": key[2],
                              "label": group_label(key), "target": t,
                              "method": b["method"], "setting": b["setting"],
                              "compute_fraction": b["compute_fraction"], "psnr": b["psnr"],
                              "ssim": b["ssim"]})
    return found


def summary(res: dict, targets=(0.5, 0.37), tol: float = 0.04, modes=None) -> str:
    out = ["| setting | target compute | best method (setting) | compute | "
           "PSNR (dB) | SSIM |", "|---|---:|---|---:|---:|---:|"]
    for b in best_at(res, targets, tol, modes):
        out.append(f"| {b['label']} | <= {b['target'] + tol:.2f}"
                   f" | {b['method']} ({b['setting']}) | {b['compute_fraction']:.3f} | "
                   f"{b['psnr']:.2f} | {b['ssim']:.4f} |")
    return "\n".join(out)


def interpolate(rows: list[dict], compute: float) -> tuple[float, bool] | None:
    """PSNR of a method's rows at ``compute``: linear between its two nearest rows, held at its
    end rows outside them (second value True: held, i.e. extrapolated)."""
    pts = sorted((r["compute_fraction"], r["psnr"]) for r in rows if r["psnr"] < 100.0)
    if not pts:
        return None
    if compute <= pts[0][0]:
        return pts[0][1], compute < pts[0][0]
    if compute >= pts[-1][0]:
        return pts[-1][1], compute > pts[-1][0]
    for (c0, p0), (c1, p1) in zip(pts, pts[1:]):
        if c0 <= compute <= c1:
            return (p0 if c1 == c0 else p0 + (p1 - p0) * (compute - c0) / (c1 - c0)), False
    return None


def _spanning(by_method: dict[str, list[dict]], compute: float) -> dict[str, float]:
    """Each method interpolated at ``compute``, for the methods whose rows span it."""
    out = {}
    for name, rows in by_method.items():
        value = interpolate(rows, compute)
        if value is not None and not value[1]:
            out[name] = value[0]
    return out


def versus_rows(res: dict, tol: float = 0.04) -> list[dict]:
    """The data of ``versus``: per project row, the comparators and the verdict ``wins``."""
    found = []
    for key, rs in _groups(res["rows"]).items():
        uniform = [r for r in rs if r["method"] == "uniform"]
        peers = [r for r in rs if r["mode"] == "eager" and r["method"] != "none"]
        by_peer = defaultdict(list)
        for p in peers:
            by_peer[p["method"]].append(p)
        ours = [r for r in rs if r["mode"] == "compiled"]
        for r in sorted(ours, key=lambda r: (r["method"], -r["compute_fraction"])):
            if r["psnr"] >= 100.0:
                continue
            c = r["compute_fraction"]
            u = interpolate(uniform, c)
            cand = [p for p in peers if p["compute_fraction"] <= c + tol]
            best = max(cand, key=lambda p: p["psnr"]) if cand else None
            spanning = _spanning(by_peer, c)
            top = max(spanning.items(), key=lambda kv: kv[1]) if spanning else None
            cheaper = [p["psnr"] for p in peers if p["compute_fraction"] <= c]
            rivals = list(spanning.values()) + cheaper
            wins = (u is None or r["psnr"] >= u[0]) and all(r["psnr"] >= v for v in rivals)
            found.append({"key": key, "row": r, "uniform": u, "best_row": best,
                          "best_interpolated": top, "wins": wins})
    return found


def versus(res: dict, tol: float = 0.04) -> str:
    """Each of the project's rows against uniform skipping at the same compute and the peers.

    Two views of the peers: the best peer row at no more than ``tol`` more compute, and the
    best peer interpolated at the same compute (each peer linearly between its two rows around
    that compute; a peer whose rows do not span it is left out of this column). The last
    column says whether the row beats uniform skipping and matches or beats every peer: the
    interpolated ones and every peer row at no more compute than ours. Every eager row is a
    peer, the uniform baselines with extrapolation included.
    """
    out = ["| model | setting | method (setting) | compute | PSNR | SSIM | uniform at same "
           "compute | best peer at <= compute + 0.04 | best peer interpolated at same compute "
           "| beats uniform and peers |",
           "|---|---|---|---:|---:|---:|---:|---|---|---|"]
    for v in versus_rows(res, tol):
        r, u, best, top = v["row"], v["uniform"], v["best_row"], v["best_interpolated"]
        model, sched = v["key"][0], group_label(v["key"]).split(", ", 1)[1]
        u_s = "-" if u is None else f"{u[0]:.1f}" + (" (held)" if u[1] else "")
        b_s = "-" if best is None else (
            f"{best['method']} ({best['setting']}) {best['compute_fraction']:.3f}: "
            f"{best['psnr']:.1f}")
        i_s = "-" if top is None else f"{top[0]}: {top[1]:.1f}"
        out.append(f"| {model} | {sched} | {r['method']} ({r['setting']}) | "
                   f"{r['compute_fraction']:.3f} | {r['psnr']:.1f} | {r['ssim']:.4f} | {u_s} | "
                   f"{b_s} | {i_s} | {'yes' if v['wins'] else 'no'} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# The preset comparison of issue 15: each preset at its compute budget against uniform skipping
# with each reuse form and every peer at the same compute.

# Each preset's compute budget, and the benchmark rows (method, setting) that hold it, in order
# of preference (``precisecache`` at alpha 1.0 is flash in result files written before the
# ``precisecache-flash`` method existed).
PRESET_BUDGETS = {"base": 0.63, "turbo": 0.465, "flash": 0.38}
PRESET_ROWS = {
    "base": [("precisecache-base", 1.0)],
    "turbo": [("precisecache-turbo", 1.0)],
    "flash": [("precisecache-flash", 1.0), ("precisecache", 1.0)],
}
# Candidates for budget-driven presets (``benchmarks/ours.py``, design measurement 22), each
# compared at its preset's budget like the presets: label -> (preset, method).
CANDIDATE_ROWS = {f"{p} ({placement})": (p, f"precisecache-{p}-{placement}")
                  for p in PRESET_BUDGETS for placement in ("score", "even")}
UNIFORM_FORMS = ("uniform", "uniform+linear", "uniform+quadratic")
BUDGET_TOLERANCE = 0.02  # issue 15: the realised compute within 0.02 of the budget, per prompt


def _held(value: tuple[float, bool] | None) -> str:
    return "-" if value is None else f"{value[0]:.1f}" + (" (held)" if value[1] else "")


def preset_rows(res: dict) -> list[dict]:
    """Per setting and preset: the preset's row, its budget, the uniform forms and every other
    peer (eager rows) interpolated at the row's compute, the margins and the verdict.

    ``on_budget``: every prompt's compute is within ``BUDGET_TOLERANCE`` of the budget (the
    PSNR comparisons are made at the realised compute either way).
    ``meets_bar``: the preset's PSNR is at least each uniform form's at its compute (held at a
    form's end rows when they do not span it), every other peer's interpolated there, and
    every peer row (the uniform forms' included) at no more compute.
    """
    found = []
    for key, rs in _groups(res["rows"]).items():
        eager = [r for r in rs if r["mode"] == "eager" and r["method"] != "none"]
        by_method = defaultdict(list)
        for r in eager:
            by_method[r["method"]].append(r)
        others = {m: v for m, v in by_method.items() if m not in UNIFORM_FORMS}
        wanted = [(p, PRESET_BUDGETS[p], PRESET_ROWS[p]) for p in PRESET_BUDGETS] + [
            (label, PRESET_BUDGETS[p], [(m, PRESET_BUDGETS[p])])
            for label, (p, m) in CANDIDATE_ROWS.items()]
        for preset, budget, candidates in wanted:
            row = None
            for method, setting in candidates:
                row = next((r for r in rs if r["method"] == method
                            and r["setting"] == setting), None)
                if row is not None:
                    break
            if row is None:
                continue
            c = row["compute_fraction"]
            per = row.get("per_prompt") or [row]
            miss = max(abs(p["compute_fraction"] - budget) for p in per)
            forms = {m: interpolate(by_method.get(m, []), c) for m in UNIFORM_FORMS}
            peers = _spanning(others, c)
            best = max(peers.items(), key=lambda kv: kv[1]) if peers else None
            cheaper = [r["psnr"] for r in eager if r["compute_fraction"] <= c]
            rivals = ([v[0] for v in forms.values() if v is not None] + list(peers.values())
                      + cheaper)
            linear = forms["uniform+linear"]
            found.append({
                "key": key, "preset": preset, "method": row["method"], "budget": budget,
                "compute": c, "psnr": row["psnr"], "ssim": row["ssim"],
                "max_budget_miss": miss, "on_budget": miss <= BUDGET_TOLERANCE + 1e-9,
                "forms": forms, "peers": peers, "best_peer": best,
                "margin_linear": None if linear is None else row["psnr"] - linear[0],
                "margin_peer": None if best is None else row["psnr"] - best[1],
                "meets_bar": bool(rivals) and all(row["psnr"] >= v for v in rivals),
            })
    return found


def presets(res: dict) -> str:
    """The preset comparison as a Markdown table, one line per setting and preset."""
    out = ["| setting | preset | budget | compute | largest miss of the budget (a prompt), "
           f"within {BUDGET_TOLERANCE} | "
           "PSNR | SSIM | uniform | uniform+linear | uniform+quadratic | other peers "
           "interpolated | margin over uniform+linear | margin over the best other peer | "
           "meets the bar |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for v in preset_rows(res):
        peers = ", ".join(f"{m} {p:.1f}" for m, p in
                          sorted(v["peers"].items(), key=lambda kv: -kv[1])) or "-"
        m_l = "-" if v["margin_linear"] is None else f"{v['margin_linear']:+.1f}"
        m_p = "-" if v["margin_peer"] is None else f"{v['margin_peer']:+.1f}"
        out.append(f"| {group_label(v['key'])} | {v['preset']} | {v['budget']:.3f} | "
                   f"{v['compute']:.3f} | {v['max_budget_miss']:.3f}, "
                   f"{'yes' if v['on_budget'] else 'no'} | {v['psnr']:.1f} | "
                   f"{v['ssim']:.4f} | " + " | ".join(_held(v["forms"][m]) for m in UNIFORM_FORMS)
                   + f" | {peers} | {m_l} | {m_p} | {'yes' if v['meets_bar'] else 'no'} |")
    return "\n".join(out)


def baselines(res: dict, budgets=tuple(PRESET_BUDGETS.values())) -> str:
    """Uniform skipping with each reuse form, and the best other peer, interpolated at each
    budget: what a preset at that budget has to beat."""
    out = ["| setting | compute | uniform | uniform+linear | uniform+quadratic | best other peer "
           "interpolated |", "|---|---:|---:|---:|---:|---|"]
    for key, rs in _groups(res["rows"]).items():
        eager = [r for r in rs if r["mode"] == "eager" and r["method"] != "none"]
        by_method = defaultdict(list)
        for r in eager:
            by_method[r["method"]].append(r)
        others = {m: v for m, v in by_method.items() if m not in UNIFORM_FORMS}
        for b in budgets:
            forms = [_held(interpolate(by_method.get(m, []), b)) for m in UNIFORM_FORMS]
            peers = _spanning(others, b)
            top = max(peers.items(), key=lambda kv: kv[1]) if peers else None
            t_s = "-" if top is None else f"{top[0]}: {top[1]:.1f}"
            out.append(f"| {group_label(key)} | {b:.3f} | " + " | ".join(forms) + f" | {t_s} |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# Leave one model out.


def split_models(res: dict, held_out: list[str], design: list[str] | None = None
                 ) -> tuple[dict, dict]:
    """``res`` cut in two: the rows of the design models (``design``, or every model not held
    out) and those of the held-out models. A model in both lists is an error."""
    both = set(held_out) & set(design or [])
    if both:
        raise ValueError(f"models both held out and used for the design: {sorted(both)}")
    held = [r for r in res["rows"] if r["model"] in held_out]
    if design is None:
        kept = [r for r in res["rows"] if r["model"] not in held_out]
    else:
        kept = [r for r in res["rows"] if r["model"] in design]
    return {**res, "rows": kept}, {**res, "rows": held}


def _models(res: dict) -> str:
    return ", ".join(sorted({r["model"] for r in res["rows"]})) or "none"


def comparisons(res: dict, with_presets: bool = False) -> str:
    """The summaries, the project's rows against the peers (with the count of rows that meet
    the bar) and, with ``with_presets``, the preset comparison and the baselines."""
    v = versus_rows(res)
    parts = ["Peers (eager rows):\n", summary(res, modes=("eager",)), "\nAll rows:\n",
             summary(res), "\nThe project's rows against uniform skipping and the best peer:\n",
             versus(res), f"\nMeets the bar: {sum(x['wins'] for x in v)} of {len(v)} rows."]
    if with_presets:
        pr = preset_rows(res)
        parts += ["\nThe presets at their budgets against uniform skipping (each reuse form) "
                  "and every peer at the same compute:\n", presets(res),
                  f"\nPresets meeting the bar: {sum(x['meets_bar'] for x in pr)} of {len(pr)}.",
                  "\nThe baselines at the presets' budgets:\n", baselines(res)]
    return "\n".join(parts)


def parse_indices(spec: str) -> list[int]:
    """``"0-4,7"`` -> [0, 1, 2, 3, 4, 7]."""
    out: list[int] = []
    for part in spec.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(f"bad prompt range {part!r} in {spec!r}; write e.g. 0-4,7")
        first, last = int(lo), int(hi or lo)
        if last < first:
            raise ValueError(f"bad prompt range {part!r}: the end is before the start")
        out.extend(range(first, last + 1))
    return out


def select_prompts(res: dict, indices: list[int]) -> dict:
    """``res`` with every row's means (compute fraction, PSNR, SSIM) taken over the prompts at
    ``indices`` of its ``per_prompt`` list. Rows without per-prompt results (the uncached
    reference) are kept as they are; a row that lacks one of the prompts is an error."""
    rows = []
    for r in res["rows"]:
        per = r.get("per_prompt")
        if per is None:
            rows.append(r)
            continue
        if max(indices) >= len(per):
            raise ValueError(f"prompt {max(indices)} asked for, but {r['model']} "
                             f"{r['method']} ({r['setting']}) has {len(per)} prompts")
        chosen = [per[i] for i in indices]
        means = {k: sum(p[k] for p in chosen) / len(chosen)
                 for k in ("compute_fraction", "psnr", "ssim")}
        rows.append({**r, **means, "per_prompt": chosen})
    return {**res, "rows": rows}


def load(paths: list[str]) -> dict:
    """One result from several files, with the first file's meta. A row of a later file
    replaces a row of an earlier one for the same model, scheduler, steps, guidance, shift,
    method and setting (a rerun of some methods, merged with the peers of an earlier run); the
    rest are concatenated in order. A row without its guidance or shift takes its file's
    guidance (5 if the file has none) and shift 3, the values of every run before they were
    recorded per row."""
    results = []
    for path in paths:
        with open(path) as f:
            results.append(json.load(f))
    rows: dict = {}
    for res in results:
        meta = res.get("meta", {})
        for r in res["rows"]:
            r.setdefault("guidance", meta.get("guidance", DEFAULT_GUIDANCE))
            r.setdefault("shift", meta.get("shift", DEFAULT_SHIFT))
            key = tuple(json.dumps(r.get(k)) for k in
                        ("model", "scheduler", "steps", "guidance", "shift", "method",
                         "setting"))
            rows[key] = r
    return {"meta": results[0].get("meta", {}), "rows": list(rows.values())}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="*", default=["bench_out/results.json"])
    p.add_argument("--prompts", default=None,
                   help="0-based prompt indices to average over, e.g. 5-7 (default: all)")
    p.add_argument("--held-out", default=None,
                   help="comma list of models that played no part in the design choices; "
                   "they are reported apart")
    p.add_argument("--design-models", default=None,
                   help="comma list of the models the choices were made on (default: every "
                   "model not held out)")
    p.add_argument("--presets", action="store_true",
                   help="also print the presets at their budgets against the baselines and peers")
    p.add_argument("--no-tables", action="store_true", help="leave out the per-setting tables")
    p.add_argument("--plot", default=None, metavar="DIR",
                   help="also write DIR/pareto-<model>.png: PSNR against compute, one panel per "
                   "scheduler and step count")
    args = p.parse_args(argv)
    res = load(args.results)
    if args.prompts:
        try:
            res = select_prompts(res, parse_indices(args.prompts))
        except ValueError as e:
            p.error(str(e))
    if args.held_out:
        design = args.design_models.split(",") if args.design_models else None
        try:
            kept, held = split_models(res, args.held_out.split(","), design)
        except ValueError as e:
            p.error(str(e))
        print(f"## Design models (informed the choices): {_models(kept)}\n")
        print(comparisons(kept, args.presets))
        print(f"\n## Held out (no part in the choices): {_models(held)}\n")
        print(comparisons(held, args.presets))
    else:
        if args.design_models:
            p.error("--design-models needs --held-out")
        print(comparisons(res, args.presets))
    if not args.no_tables:
        print(tables(res))
    if args.plot:
        from . import plots

        out = Path(args.plot)
        out.mkdir(parents=True, exist_ok=True)
        for model in sorted({r["model"] for r in res["rows"]}):
            path = out / f"pareto-{model}.png"
            plots.pareto([r for r in res["rows"] if r["model"] == model], path)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
