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
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict


def _fmt(x, nd=2):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def tables(res: dict) -> str:
    rows = res["rows"]
    cap = res["meta"].get("psnr_cap", 100.0)
    groups = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["scheduler"], r["steps"])].append(r)
    out = []
    for (model, sched, steps), rs in groups.items():
        out.append(f"\n#### {model}, {sched}, {steps} steps\n")
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
    groups = defaultdict(list)
    for r in res["rows"]:
        if r["method"] != "none" and (modes is None or r["mode"] in modes):
            groups[(r["model"], r["scheduler"], r["steps"])].append(r)
    found = []
    for key, rs in groups.items():
        for t in targets:
            cand = [r for r in rs if r["compute_fraction"] <= t + tol]
            if cand:
                b = max(cand, key=lambda r: r["psnr"])
                found.append({"model": key[0], "scheduler": key[1], "steps": key[2], "target": t,
                              "method": b["method"], "setting": b["setting"],
                              "compute_fraction": b["compute_fraction"], "psnr": b["psnr"],
                              "ssim": b["ssim"]})
    return found


def summary(res: dict, targets=(0.5, 0.37), tol: float = 0.04, modes=None) -> str:
    out = ["| model | scheduler | steps | target compute | best method (setting) | compute | "
           "PSNR (dB) | SSIM |", "|---|---|---:|---:|---|---:|---:|---:|"]
    for b in best_at(res, targets, tol, modes):
        out.append(f"| {b['model']} | {b['scheduler']} | {b['steps']} | <= {b['target'] + tol:.2f}"
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


def versus(res: dict, tol: float = 0.04) -> str:
    """Each of the project's rows against uniform skipping at the same compute and the peers.

    Two views of the peers: the best peer row at no more than ``tol`` more compute, and the
    best peer interpolated at the same compute (each peer linearly between its two rows around
    that compute; a peer whose rows do not span it is left out of this column). The last
    column says whether the row beats uniform skipping and matches or beats every peer: the
    interpolated ones and every peer row at no more compute than ours.
    """
    groups = defaultdict(list)
    for r in res["rows"]:
        groups[(r["model"], r["scheduler"], r["steps"])].append(r)
    out = ["| model | scheduler | method (setting) | compute | PSNR | SSIM | uniform at same "
           "compute | best peer at <= compute + 0.04 | best peer interpolated at same compute "
           "| beats uniform and peers |",
           "|---|---|---|---:|---:|---:|---:|---|---|---|"]
    for (model, sched, _), rs in groups.items():
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
            u_s = "-" if u is None else f"{u[0]:.1f}" + (" (held)" if u[1] else "")
            cand = [p for p in peers if p["compute_fraction"] <= c + tol]
            best = max(cand, key=lambda p: p["psnr"]) if cand else None
            b_s = "-" if best is None else (
                f"{best['method']} ({best['setting']}) {best['compute_fraction']:.3f}: "
                f"{best['psnr']:.1f}")
            spanning = {}
            for name, prs in by_peer.items():
                value = interpolate(prs, c)
                if value is not None and not value[1]:
                    spanning[name] = value[0]
            top = max(spanning.items(), key=lambda kv: kv[1]) if spanning else None
            i_s = "-" if top is None else f"{top[0]}: {top[1]:.1f}"
            cheaper = [p["psnr"] for p in peers if p["compute_fraction"] <= c]
            rivals = list(spanning.values()) + cheaper
            wins = (u is None or r["psnr"] >= u[0]) and all(r["psnr"] >= v for v in rivals)
            out.append(f"| {model} | {sched} | {r['method']} ({r['setting']}) | "
                       f"{c:.3f} | {r['psnr']:.1f} | {r['ssim']:.4f} | {u_s} | {b_s} | {i_s} "
                       f"| {'yes' if wins else 'no'} |")
    return "\n".join(out)


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
    replaces a row of an earlier one for the same model, scheduler, steps, method and setting
    (a rerun of some methods, merged with the peers of an earlier run); the rest are
    concatenated in order."""
    results = []
    for path in paths:
        with open(path) as f:
            results.append(json.load(f))
    rows: dict = {}
    for res in results:
        for r in res["rows"]:
            key = tuple(json.dumps(r.get(k)) for k in
                        ("model", "scheduler", "steps", "method", "setting"))
            rows[key] = r
    return {"meta": results[0].get("meta", {}), "rows": list(rows.values())}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="*", default=["bench_out/results.json"])
    p.add_argument("--prompts", default=None,
                   help="0-based prompt indices to average over, e.g. 5-7 (default: all)")
    args = p.parse_args(argv)
    res = load(args.results)
    if args.prompts:
        try:
            res = select_prompts(res, parse_indices(args.prompts))
        except ValueError as e:
            p.error(str(e))
    print("Peers (eager rows):\n")
    print(summary(res, modes=("eager",)))
    print("\nAll rows:\n")
    print(summary(res))
    print("\nThe project's rows against uniform skipping and the best peer:\n")
    print(versus(res))
    print(tables(res))


if __name__ == "__main__":
    main()
