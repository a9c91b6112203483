"""Procedural video data for the reference models.

Each video is a textured shape that moves and turns over a drifting colour gradient. The class
label fixes the shape (disc, square, triangle, ring) and the colour family of the shape (warm or
cool), giving 8 classes. Everything else (position, velocity, size, rotation, texture orientation
and period, background colours and direction) is drawn from a generator seeded per video, so a
video is a pure function of ``(seed, label)``.

Videos are used directly as latents (there is no VAE): a tensor ``(C, F, H, W)`` with ``C = 4``
channels: RGB scaled to [-1, 1] and the shape's soft mask scaled to [-1, 1]. The images have coarse
structure (gradient, silhouette), motion (translation, rotation, background drift) and fine texture
(stripes with a period of a few pixels inside the shape).
"""

from __future__ import annotations

import math

import torch

SHAPES = ("disc", "square", "triangle", "ring")
PALETTES = ("warm", "cool")
NUM_CLASSES = len(SHAPES) * len(PALETTES)
CHANNELS = 4

# Hue ranges (in turns) of the shape's colour family.
_PALETTE_HUES = {"warm": (-0.04, 0.14), "cool": (0.45, 0.70)}


def class_name(label: int) -> str:
    """Human-readable name of a class label, e.g. ``"warm disc"``."""
    shape, palette = split_label(label)
    return f"{PALETTES[palette]} {SHAPES[shape]}"


def split_label(label: int) -> tuple[int, int]:
    """``label -> (shape index, palette index)``."""
    if not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label {label} outside [0, {NUM_CLASSES})")
    return label % len(SHAPES), label // len(SHAPES)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Vectorised HSV -> RGB for scalars/tensors in [0, 1]; returns (..., 3)."""
    h = torch.remainder(h, 1.0)
    k = torch.stack([(5 + h * 6) % 6, (3 + h * 6) % 6, (1 + h * 6) % 6], dim=-1)
    f = torch.clamp(torch.minimum(k, 4 - k), 0, 1)
    return v[..., None] - v[..., None] * s[..., None] * f


def _uniform(g: torch.Generator, lo: float, hi: float, n: int = 1) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def make_video(
    seed: int,
    label: int | None = None,
    frames: int = 9,
    size: int = 32,
) -> tuple[torch.Tensor, int]:
    """Generate one video. Returns ``(video (4, frames, size, size) float32, label)``.

    ``label`` is drawn from the seed when not given. The same ``(seed, label, frames, size)``
    always gives the same tensor, bit for bit.
    """
    g = torch.Generator().manual_seed(int(seed))
    drawn = int(torch.randint(NUM_CLASSES, (1,), generator=g))
    label = drawn if label is None else int(label)
    shape, palette = split_label(label)
    dt = torch.float64

    # Pixel grid in [-1, 1], time in [0, 1].
    coords = (torch.arange(size, dtype=dt) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    t = torch.linspace(0, 1, frames, dtype=dt)[:, None, None]

    # Background: a gradient between two muted colours along a direction that turns slowly,
    # plus a gentle wave that drifts over time.
    bg_h = _uniform(g, 0, 1, 2)
    bg_s = _uniform(g, 0.15, 0.55, 2)
    bg_v = _uniform(g, 0.25, 0.75, 2)
    bg_cols = _hsv_to_rgb(bg_h, bg_s, bg_v)  # (2, 3)
    ang0 = float(_uniform(g, 0, 2 * math.pi))
    dang = float(_uniform(g, -0.6, 0.6))
    ang = ang0 + dang * t
    proj = xx * torch.cos(ang) + yy * torch.sin(ang)  # (F, H, W)
    wave_k = float(_uniform(g, 1.0, 2.5))
    wave_speed = float(_uniform(g, -2.0, 2.0))
    mix = 0.5 + 0.4 * proj + 0.08 * torch.sin(wave_k * math.pi * (proj + wave_speed * t))
    mix = mix.clamp(0, 1)[..., None]
    bg = bg_cols[0] * (1 - mix) + bg_cols[1] * mix  # (F, H, W, 3)

    # Shape: centre moves on a straight line, the shape turns at a constant rate.
    radius = float(_uniform(g, 0.32, 0.48))
    c0 = _uniform(g, -0.3, 0.3, 2)
    vel = _uniform(g, -0.5, 0.5, 2)
    cx = c0[0] + vel[0] * (t - 0.5)
    cy = c0[1] + vel[1] * (t - 0.5)
    rot0 = float(_uniform(g, 0, 2 * math.pi))
    drot = float(_uniform(g, -1.2, 1.2))
    rot = rot0 + drot * t
    dx, dy = xx - cx, yy - cy
    u = dx * torch.cos(rot) + dy * torch.sin(rot)
    v = -dx * torch.sin(rot) + dy * torch.cos(rot)
    if SHAPES[shape] == "disc":
        sd = torch.sqrt(u * u + v * v) - radius
    elif SHAPES[shape] == "square":
        sd = torch.maximum(u.abs(), v.abs()) - radius * 0.85
    elif SHAPES[shape] == "triangle":
        sd = None
        for k in range(3):
            a = 2 * math.pi * k / 3 + math.pi / 2
            d = u * math.cos(a) + v * math.sin(a) - radius * 0.55
            sd = d if sd is None else torch.maximum(sd, d)
    else:  # ring
        sd = (torch.sqrt(u * u + v * v) - radius).abs() - radius * 0.35
    edge = 2.0 / size  # soft edge about one pixel wide
    mask = torch.sigmoid(-sd / edge)[..., None]  # (F, H, W, 1)

    # Fine texture: stripes in the shape's own frame (they move and turn with it).
    hue_lo, hue_hi = _PALETTE_HUES[PALETTES[palette]]
    fg_h = _uniform(g, hue_lo, hue_hi)
    fg_col = _hsv_to_rgb(fg_h, _uniform(g, 0.7, 1.0), _uniform(g, 0.8, 1.0))[0]  # (3,)
    period_px = float(_uniform(g, 3.0, 5.0))
    tex_ang = float(_uniform(g, 0, math.pi))
    along = u * math.cos(tex_ang) + v * math.sin(tex_ang)
    stripes = 0.5 + 0.5 * torch.cos(2 * math.pi * along * size / 2 / period_px)
    fg = fg_col * (0.55 + 0.45 * stripes[..., None])

    rgb = bg * (1 - mask) + fg * mask  # (F, H, W, 3)
    video = torch.cat([rgb * 2 - 1, mask * 2 - 1], dim=-1)  # (F, H, W, 4)
    return video.permute(3, 0, 1, 2).contiguous().float(), label


def make_batch(
    seeds: list[int] | torch.Tensor,
    labels: list[int] | None = None,
    frames: int = 9,
    size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack several videos: ``(B, 4, F, H, W)`` and labels ``(B,)`` (long)."""
    seeds = [int(s) for s in seeds]
    labels = [None] * len(seeds) if labels is None else [int(x) for x in labels]
    vids, labs = zip(*(make_video(s, lab, frames, size) for s, lab in zip(seeds, labels)))
    return torch.stack(vids), torch.tensor(labs, dtype=torch.long)


def to_rgb_frames(video: torch.Tensor) -> torch.Tensor:
    """``(4, F, H, W)`` latent video -> ``(F, H, W, 3)`` RGB in [0, 1] for viewing."""
    return ((video[:3].permute(1, 2, 3, 0).float() + 1) / 2).clamp(0, 1)


def save_grid(videos: torch.Tensor, path: str, titles: list[str] | None = None) -> None:
    """Save a grid of videos (rows) by frames (columns) as a PNG (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    videos = videos.detach().cpu()
    n, f = videos.shape[0], videos.shape[2]
    fig, axes = plt.subplots(n, f, figsize=(f * 1.0, n * 1.05), squeeze=False)
    for i in range(n):
        frames = to_rgb_frames(videos[i]).numpy()
        for j in range(f):
            ax = axes[i][j]
            ax.imshow(frames[j], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0 and titles is not None:
                ax.set_ylabel(titles[i], fontsize=6)
    fig.tight_layout(pad=0.1)
    fig.savefig(path, dpi=100)
    plt.close(fig)
