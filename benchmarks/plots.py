"""Plots of the benchmark results (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_MARKERS = "osD^v<>pP*Xh"


def _panel(r: dict) -> tuple:
    """A row's setting: model, scheduler, steps, and guidance and shift where recorded."""
    return (r["model"], r["scheduler"], r["steps"], r.get("guidance"), r.get("shift"))


def pareto(rows: list[dict], path: Path, cap: float = 100.0) -> None:
    """PSNR against compute fraction: one panel per model x scheduler x steps (x guidance and
    shift, where the rows hold several)."""
    panels = sorted({_panel(r) for r in rows}, key=lambda k: tuple(str(x) for x in k))
    several = len({k[3:] for k in panels}) > 1
    methods = sorted({r["method"] for r in rows if r["method"] != "none"})
    ncol = min(2, len(panels))
    nrow = (len(panels) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.2 * ncol, 4.3 * nrow), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        model, sched, steps, guidance, shift = panel
        for k, m in enumerate(methods):
            # Outputs identical to the uncached one (PSNR at the cap) are left out.
            pts = sorted((r["compute_fraction"], r["psnr"]) for r in rows
                         if _panel(r) == panel and r["method"] == m and r["psnr"] < cap)
            if pts:
                ax.plot(*zip(*pts), marker=_MARKERS[k % len(_MARKERS)], label=m, lw=1.2, ms=4,
                        color=plt.cm.tab20(k % 20))
        extra = f", guidance {guidance:g}, shift {shift:g}" if several and guidance else ""
        ax.set_title(f"{model}, {sched}, {steps} steps{extra}", fontsize=10)
        ax.set_xlabel("compute fraction (block evaluations / steps x blocks)")
        ax.set_ylabel("PSNR vs uncached (dB)")
        ax.set_xlim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _closest(recs, target=0.5):
    return min(recs, key=lambda r: abs(r["compute_fraction"] - target)) if recs else None


def schedule(schedules: list[dict], model: str, path: Path, first: str | None = None,
             target: float = 0.5) -> None:
    """Per method (setting nearest ``target`` compute, first scheduler/steps, first prompt):
    which blocks ran at each step for the cond and uncond calls; below, the method's metric
    against its threshold when its trace exposes one."""
    recs = [s for s in schedules if s["model"] == model and s.get("calls")]
    if not recs:
        return
    key0 = (recs[0]["scheduler"], recs[0]["steps"])
    recs = [s for s in recs if (s["scheduler"], s["steps"]) == key0]
    methods = sorted({s["method"] for s in recs}, key=lambda m: (m != first, m))
    chosen = [_closest([s for s in recs if s["method"] == m], target) for m in methods]
    has_trace = [c for c in chosen if any(t.get("metric") is not None for t in c["trace"])]
    n = len(chosen) + len(has_trace)
    fig, axes = plt.subplots(n, 1, figsize=(9, 1.35 * n + 0.6), squeeze=False)
    axes = list(axes.flat)
    for ax, c in zip(axes, chosen):
        steps, nb = c["steps"], c["blocks"]
        import numpy as np

        img = np.full((2 * nb + 1, steps), np.nan)
        for name, step, share in c["calls"]:
            # A batched call holds both branches: draw it in both rows.
            offs = {"cond": [0], "uncond": [nb + 1]}.get(name, [0, nb + 1])
            for off in offs:
                img[off: off + nb, step] = share
        ax.imshow(img, aspect="auto", cmap="Greens", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks([(nb - 1) / 2, nb + 1 + (nb - 1) / 2], ["cond", "uncond"], fontsize=7)
        ax.set_xticks(range(0, steps, max(1, steps // 10)))
        ax.tick_params(labelsize=7)
        ax.set_title(f"{c['method']} {c['setting']}: compute {c['compute_fraction']:.2f} "
                     "(rows: blocks; dark = ran)", fontsize=8)
    for ax, c in zip(axes[len(chosen):], has_trace):
        tr = [t for t in c["trace"] if t["branch"] == "cond"]
        ax.plot([t["step"] for t in tr], [t["metric"] for t in tr], marker=".", label="metric")
        ax.plot([t["step"] for t in tr], [t["threshold"] for t in tr], "r--", label="threshold")
        sk = [t["step"] for t in tr if t["skip"]]
        ax.plot(sk, [0] * len(sk), "kx", ms=4, label="skipped")
        ax.set_xlim(-0.5, c["steps"] - 0.5)
        ax.set_title(f"{c['method']} {c['setting']} (cond): decision metric", fontsize=8)
        ax.legend(fontsize=6, loc="upper right")
        ax.tick_params(labelsize=7)
    axes[-1].set_xlabel("step")
    fig.suptitle(f"{model}, {key0[0]}, {key0[1]} steps: per-step schedule near "
                 f"{target:.0%} compute", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
