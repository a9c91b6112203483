"""Train a reference model by flow matching (the Wan recipe) on the procedural videos.

    python -m benchmarks.train --model wan-tiny --steps 1500 --batch 4 --out models/wan-tiny

Recipe: ``x_t = (1 - s) x0 + s noise`` with ``s = sigmoid(n)``, ``n ~ N(0, 1)`` (logit-normal),
the network gets ``timestep = 1000 s`` and predicts the velocity ``noise - x0`` (MSE loss). The
condition is a class embedding given as ``encoder_hidden_states`` (a fixed table of text-like
embeddings, a few tokens per class), replaced by the null embedding (zeros) with probability 0.1 so
that classifier-free guidance is meaningful. AdamW, linear warm-up then cosine decay, gradient
clipping, an exponential moving average of the weights (saved). ``--short-frames K`` trains the
first ``--short-fraction`` of the steps on random K-frame windows of the videos (cheaper attention;
the rotary/sinusoidal position encodings carry over to the full length used for the rest).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from . import data, models


def flow_matching_loss(
    model: torch.nn.Module,
    x0: torch.Tensor,
    ehs: torch.Tensor,
    layout: str,
    generator: torch.Generator,
) -> torch.Tensor:
    """One flow-matching loss on a clean batch ``x0`` ``(B, C, F, H, W)``."""
    b = x0.shape[0]
    s = torch.sigmoid(torch.randn(b, generator=generator))
    noise = torch.randn(x0.shape, generator=generator)
    sv = s.view(b, 1, 1, 1, 1)
    xt = (1 - sv) * x0 + sv * noise
    target = noise - x0
    pred = model(
        hidden_states=models.to_layout(xt, layout),
        timestep=s * 1000,
        encoder_hidden_states=ehs,
        return_dict=False,
    )[0]
    return (models.from_layout(pred, layout).float() - target).pow(2).mean()


@torch.no_grad()
def preview_samples(
    model: torch.nn.Module,
    table: torch.Tensor,
    null: torch.Tensor,
    layout: str,
    shape: tuple[int, int, int, int],
    labels: list[int],
    steps: int = 20,
    guidance: float = 5.0,
    shift: float = 3.0,
    seed: int = 0,
) -> torch.Tensor:
    """Quick Euler flow-matching samples with classifier-free guidance, ``(B, C, F, H, W)``.

    Only for looking at training progress; the benchmark uses ``sampling.py``.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((len(labels), *shape), generator=g)
    sig = torch.linspace(1, 0, steps + 1)
    sig = shift * sig / (1 + (shift - 1) * sig)
    cond = table[torch.tensor(labels)]
    unc = null[None].expand_as(cond)
    for i in range(steps):
        t = torch.full((len(labels),), float(sig[i]) * 1000)
        inp = models.to_layout(x, layout)
        vc = model(hidden_states=inp, timestep=t, encoder_hidden_states=cond, return_dict=False)[0]
        vu = model(hidden_states=inp, timestep=t, encoder_hidden_states=unc, return_dict=False)[0]
        v = models.from_layout(vu + guidance * (vc - vu), layout)
        x = x + (sig[i + 1] - sig[i]) * v
    return x


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def save_model(model, table, null, out: Path, record: dict, name: str) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "diffusion_pytorch_model.safetensors"))
    save_file(
        {"class_embeddings": table.contiguous(), "null_embedding": null.contiguous()},
        str(out / "conditioning.safetensors"),
    )
    cfg = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    cfg["_class_name"] = type(model).__name__
    (out / "config.json").write_text(json.dumps(cfg, indent=2, default=list) + "\n")
    spec = models.SPECS[name]
    ref = {
        "arch": spec["arch"],
        "latent_shape": [data.CHANNELS, spec["frames"], spec["size"], spec["size"]],
        "num_classes": data.NUM_CLASSES,
        "training": record,
    }
    (out / "reference.json").write_text(json.dumps(ref, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    from tqdm import tqdm

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", required=True, choices=sorted(models.SPECS))
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--cond-dropout", type=float, default=0.1)
    p.add_argument("--short-frames", type=int, default=0, help="window length early in training")
    p.add_argument("--short-fraction", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--preview-every", type=int, default=0, help="save preview PNGs (0: only end)")
    p.add_argument("--preview-dir", default=None, help="where previews go (default: --out)")
    p.add_argument("--out", default=None, help="output dir (default models/<model>)")
    p.add_argument("--init-from", default=None,
                   help="continue from the weights in this model dir (its record is kept)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    spec = models.SPECS[args.model]
    layout = models.LAYOUTS[spec["arch"]]
    frames, size = spec["frames"], spec["size"]
    out = Path(args.out) if args.out else models.MODELS_DIR / args.model

    model = models.build(args.model).train()
    table, null = models.make_class_table(seed=args.seed)
    previous = None
    if args.init_from:
        from safetensors.torch import load_file

        src = Path(args.init_from)
        state = load_file(str(src / "diffusion_pytorch_model.safetensors"))
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
        cond = load_file(str(src / "conditioning.safetensors"))
        table, null = cond["class_embeddings"], cond["null_embedding"]
        previous = json.loads((src / "reference.json").read_text())["training"]
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed + 1)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {n_params / 1e6:.3f}M parameters, latent {data.CHANNELS}x{frames}x"
          f"{size}x{size}, {args.steps} steps of batch {args.batch}", flush=True)

    short_until = int(args.steps * args.short_fraction) if args.short_frames else 0
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(range(args.steps), desc=args.model, mininterval=5)
    for step in bar:
        seeds = [step * args.batch + i + 1_000_000 * args.seed for i in range(args.batch)]
        x0, labels = data.make_batch(seeds, frames=frames, size=size)
        if step < short_until:
            start = int(torch.randint(frames - args.short_frames + 1, (1,), generator=g))
            x0 = x0[:, :, start : start + args.short_frames]
        drop = torch.rand(args.batch, generator=g) < args.cond_dropout
        ehs = torch.where(drop[:, None, None], null[None], table[labels])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        loss = flow_matching_loss(model, x0, ehs, layout, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        if (step + 1) % args.log_every == 0:
            avg = sum(losses[-args.log_every :]) / args.log_every
            msg = f"step {step + 1} loss {avg:.4f} lr {opt.param_groups[0]['lr']:.2e}"
            bar.write(msg + f" elapsed {time.time() - t0:.0f}s")
        if args.preview_every and (step + 1) % args.preview_every == 0:
            pdir = Path(args.preview_dir) if args.preview_dir else out
            _preview(ema, table, null, layout, frames, size, pdir / f"preview_{step + 1}.png")

    wall = time.time() - t0
    tail = losses[-min(len(losses), 100) :]
    record = {
        "recipe": "flow matching, x_t=(1-s)x0+s*noise, target noise-x0, timestep 1000s, "
        "s logit-normal, 10% condition dropout to a zero null embedding",
        "steps": args.steps,
        "batch": args.batch,
        "lr": args.lr,
        "warmup": args.warmup,
        "ema": args.ema,
        "short_frames": args.short_frames,
        "short_until_step": short_until,
        "seed": args.seed,
        "parameters": n_params,
        "final_loss_last100": sum(tail) / len(tail),
        "wall_time_s": round(wall, 1),
        "threads": args.threads,
        "device": f"CPU ({platform.processor() or platform.machine()}), torch "
        f"{torch.__version__}",
        "saved_weights": "EMA",
    }
    if previous is not None:
        record["init_from"] = str(args.init_from)
        record["previous"] = previous
    save_model(ema, table, null, out, record, args.model)
    (out / "loss.json").write_text(json.dumps([round(x, 5) for x in losses]) + "\n")
    _preview(ema, table, null, layout, frames, size, out / "sample.png")
    print(f"done: final loss (mean of last {len(tail)}) {record['final_loss_last100']:.4f}, "
          f"wall {wall:.0f}s, saved to {out}", flush=True)


def _preview(ema, table, null, layout, frames, size, path: Path) -> None:
    labels = list(range(data.NUM_CLASSES))
    x = preview_samples(ema, table, null, layout, (data.CHANNELS, frames, size, size), labels)
    os.makedirs(path.parent, exist_ok=True)
    data.save_grid(x, str(path), [data.class_name(i) for i in labels])


if __name__ == "__main__":
    main()
