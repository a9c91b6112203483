"""Write ``models/<name>/README.md`` from the training record.

    python -m benchmarks.modelcard NAME --command "..."

(the command is the exact training command, recorded in the card)."""

from __future__ import annotations

import argparse
import json

from . import data, models

_ARCH = {
    "wan": "diffusers `WanTransformer3DModel`",
    "cogvideox": "diffusers `CogVideoXTransformer3DModel` (sinusoidal positions, no RoPE)",
}


def render(name: str, command: str, extra: str = "") -> str:
    root = models.MODELS_DIR / name
    ref = json.loads((root / "reference.json").read_text())
    cfg = json.loads((root / "config.json").read_text())
    tr = ref["training"]
    c, f, h, w = ref["latent_shape"]
    size_mb = (root / "diffusion_pytorch_model.safetensors").stat().st_size / 2**20
    cfg_lines = "\n".join(f"| `{k}` | `{v}` |" for k, v in cfg.items() if not k.startswith("_"))
    classes = ", ".join(f"{i}: {data.class_name(i)}" for i in range(ref["num_classes"]))
    stages = []
    rec = tr
    while rec is not None:
        stages.insert(0, rec)
        rec = rec.get("previous")
    total_min = sum(r["wall_time_s"] for r in stages) / 60
    total_steps = sum(r["steps"] for r in stages)
    staged = ""
    if len(stages) > 1:
        parts = [f"{r['steps']} steps at learning rate {r['lr']} (batch {r['batch']}, warm-up "
                 f"{r['warmup']}, data seed {r['seed']}, {r['wall_time_s'] / 60:.1f} min)"
                 for r in stages]
        staged = (" Training ran in " + str(len(stages)) + " runs, each continuing from the"
                  " previous run's saved (EMA) weights: " + "; then ".join(parts) + ".")
    short = ""
    if tr.get("short_frames"):
        short = (f" The first {tr['short_until_step']} steps used random {tr['short_frames']}-frame"
                 f" windows of the videos (cheaper attention); the remaining steps used all {f}"
                 " frames.")
    return f"""# {name}

A small video diffusion transformer ({_ARCH[ref['arch']]}, {tr['parameters'] / 1e6:.2f}M
parameters, {size_mb:.1f} MB in fp16) trained from scratch **on a CPU** as a reference model for
the precisecache benchmark (`python -m benchmarks`). It is a test subject with real
denoising dynamics, not a useful generator.

![samples](sample.png)

*Samples (rows: the {ref['num_classes']} classes; columns: the {f} frames; RGB channels shown),
20 Euler flow-matching steps, shift 3, classifier-free guidance 5, from the saved weights.*

## Data

Procedural videos from `benchmarks/data.py`, used directly as latents (no VAE): a textured
shape that moves and turns over a drifting colour gradient, {c} channels (RGB in [-1, 1] and the
shape's soft mask in [-1, 1]), {f} frames of {h}x{w}. Classes ({ref['num_classes']}): {classes}.
Every training batch is freshly generated from new seeds.

Conditioning: a fixed table of text-like embeddings, {models.TEXT_TOKENS} tokens of
{models.TEXT_DIM} dimensions per class (seeded gaussian, stored in `conditioning.safetensors`),
given as `encoder_hidden_states`; the null embedding (zeros) replaces it for 10% of the samples so
classifier-free guidance is meaningful.

## Recipe

Flow matching as in Wan: `x_t = (1 - s) x0 + s noise`, `s = sigmoid(n)` with `n ~ N(0, 1)`
(logit-normal), timestep `1000 s`, the network predicts `noise - x0`, MSE loss. AdamW (betas
0.9/0.99, no weight decay), learning rate {tr['lr']} with {tr['warmup']} warm-up steps and cosine
decay to 10%, gradient clipping at 1, batch {tr['batch']}, {total_steps} steps, EMA of the weights
(decay {tr['ema']}; the EMA weights are saved).{short}{staged}

| | |
|---|---|
| steps | {total_steps} (batch {tr['batch']}) |
| final loss (mean of the last 100 steps) | {tr['final_loss_last100']:.4f} |
| training time | {total_min:.1f} min on {tr['threads']} CPU thread(s) |
| device | {tr['device']} (no GPU) |
| latent | {c} x {f} x {h} x {w} (C, F, H, W); model layout `{models.LAYOUTS[ref['arch']]}` |

The loss per step of the last run is in `loss.json`.
{extra}
## Reproduce

```bash
{command}
```

Runs are seeded (initialisation, data, noise); a different CPU, torch build or thread count can
give slightly different weights.

## Use

```python
from benchmarks.models import load_reference, encoder_hidden_states
model, info = load_reference("{name}")   # eval mode; info: latent shape, layout, class table
ehs = encoder_hidden_states(info, [label])  # or encoder_hidden_states(info, None) for the null
```

## Config

| field | value |
|---|---|
{cfg_lines}
"""


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("name")
    p.add_argument("--command", required=True)
    p.add_argument("--extra", default="")
    args = p.parse_args(argv)
    text = render(args.name, args.command, args.extra)
    (models.MODELS_DIR / args.name / "README.md").write_text(text)


if __name__ == "__main__":
    main()
