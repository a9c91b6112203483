"""Reference models: small diffusers video DiTs trained on the procedural data (``data.py``).

Each model lives in ``models/<name>/`` at the repository root:

- ``diffusion_pytorch_model.safetensors``: the transformer's weights (fp16),
- ``config.json``: the diffusers config of the transformer,
- ``conditioning.safetensors``: ``class_embeddings`` (classes, tokens, dim) and ``null_embedding``
  (tokens, dim), the "text" conditioning fed as ``encoder_hidden_states``,
- ``reference.json``: architecture, latent shape and layout, and the training record,
- ``README.md``: the model card.

``load_reference(name)`` returns the transformer in eval mode and an info dict; ``list_reference()``
names the models present.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from . import data

MODELS_DIR = Path(os.environ.get("PC_MODELS_DIR", Path(__file__).resolve().parents[1] / "models"))

TEXT_DIM = 32
TEXT_TOKENS = 4

# Architectures: the diffusers class, how its latent is laid out, and the default config used by
# the training script. Sizes were chosen so that training fits a CPU budget (see model cards).
SPECS: dict[str, dict] = {
    "wan-tiny": {
        "arch": "wan",
        "frames": 9,
        "size": 32,
        "config": {
            "patch_size": [1, 2, 2],
            "num_attention_heads": 3,
            "attention_head_dim": 32,
            "in_channels": data.CHANNELS,
            "out_channels": data.CHANNELS,
            "text_dim": TEXT_DIM,
            "freq_dim": 64,
            "ffn_dim": 256,
            "num_layers": 4,
            "rope_max_seq_len": 64,
        },
    },
    "cogvideox-tiny": {
        "arch": "cogvideox",
        "frames": 9,
        "size": 16,
        "config": {
            "num_attention_heads": 3,
            "attention_head_dim": 32,
            "in_channels": data.CHANNELS,
            "out_channels": data.CHANNELS,
            "time_embed_dim": 96,
            "text_embed_dim": TEXT_DIM,
            "num_layers": 4,
            "sample_width": 16,
            "sample_height": 16,
            "sample_frames": 33,  # (frames - 1) * temporal_compression_ratio + 1
            "patch_size": 2,
            "max_text_seq_length": TEXT_TOKENS,
        },
    },
    # Twelve narrow blocks: for block-level rules (BlockCache, BWCache), which a 4-block model
    # cannot judge fairly (each block is a quarter of the network there).
    "cogvideox-deep": {
        "arch": "cogvideox",
        "frames": 9,
        "size": 16,
        "config": {
            "num_attention_heads": 2,
            "attention_head_dim": 32,
            "in_channels": data.CHANNELS,
            "out_channels": data.CHANNELS,
            "time_embed_dim": 64,
            "text_embed_dim": TEXT_DIM,
            "num_layers": 12,
            "sample_width": 16,
            "sample_height": 16,
            "sample_frames": 33,
            "patch_size": 2,
            "max_text_seq_length": TEXT_TOKENS,
        },
    },
}

# Memory layout of the latent each architecture's forward expects.
LAYOUTS = {"wan": "BCFHW", "cogvideox": "BFCHW"}


def model_class(arch: str):
    """The diffusers transformer class of an architecture name."""
    import diffusers

    return {
        "wan": diffusers.WanTransformer3DModel,
        "cogvideox": diffusers.CogVideoXTransformer3DModel,
    }[arch]


def build(name: str, config: dict | None = None) -> torch.nn.Module:
    """A freshly initialised transformer for spec ``name`` (``config`` overrides the spec)."""
    spec = SPECS[name]
    cfg = dict(spec["config"])
    cfg.update(config or {})
    cls = model_class(spec["arch"])
    if spec["arch"] == "wan":
        cfg["patch_size"] = tuple(cfg["patch_size"])
    return cls(**cfg)


def make_class_table(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed text-like embedding table ``(classes, tokens, dim)`` and the null embedding."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(data.NUM_CLASSES, TEXT_TOKENS, TEXT_DIM, generator=g)
    return table, torch.zeros(TEXT_TOKENS, TEXT_DIM)


def to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """``(B, C, F, H, W)`` -> the model's layout."""
    return x if layout == "BCFHW" else x.transpose(1, 2).contiguous()


def from_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The model's layout -> ``(B, C, F, H, W)``."""
    return x if layout == "BCFHW" else x.transpose(1, 2).contiguous()


def list_reference(models_dir: str | Path | None = None) -> list[str]:
    """Names of the reference models present on disk."""
    root = Path(models_dir) if models_dir is not None else MODELS_DIR
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if (p / "diffusion_pytorch_model.safetensors").is_file()
    )


def load_reference(
    name: str, dtype: torch.dtype = torch.float32, models_dir: str | Path | None = None
) -> tuple[torch.nn.Module, dict]:
    """Load a reference model. Returns ``(transformer in eval mode, info)``.

    ``info`` holds: ``name``, ``arch``, ``layout`` (``"BCFHW"`` or ``"BFCHW"``), ``latent_shape``
    (C, F, H, W), ``model_input_shape`` (the per-sample shape in the model's layout),
    ``num_classes``, ``class_names``, ``class_embeddings`` (classes, tokens, dim),
    ``null_embedding`` (tokens, dim), ``num_blocks``, ``blocks_attr`` (the ModuleList holding the
    blocks) and ``training`` (the training record).
    """
    from safetensors.torch import load_file

    root = (Path(models_dir) if models_dir is not None else MODELS_DIR) / name
    if not root.is_dir():
        raise FileNotFoundError(f"no reference model {name!r} in {root.parent}")
    ref = json.loads((root / "reference.json").read_text())
    config = json.loads((root / "config.json").read_text())
    cls = model_class(ref["arch"])
    model = cls.from_config(config)
    state = load_file(str(root / "diffusion_pytorch_model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Non-persistent buffers (e.g. positional tables) are recomputed by the constructor.
    if unexpected or any(k in state for k in missing):
        raise RuntimeError(f"{name}: state dict mismatch: {missing=} {unexpected=}")
    if missing:
        raise RuntimeError(f"{name}: missing weights {missing}")
    if dtype != torch.float32:
        model = model.to(dtype)
    model = model.eval().requires_grad_(False)
    cond = load_file(str(root / "conditioning.safetensors"))
    info = info_dict(name, ref, model)
    info["class_embeddings"] = cond["class_embeddings"].to(dtype)
    info["null_embedding"] = cond["null_embedding"].to(dtype)
    return model, info


def blocks_attr(arch: str) -> str:
    return {"wan": "blocks", "cogvideox": "transformer_blocks"}[arch]


def info_dict(name: str, ref: dict, model: torch.nn.Module) -> dict:
    c, f, h, w = ref["latent_shape"]
    layout = LAYOUTS[ref["arch"]]
    attr = blocks_attr(ref["arch"])
    return {
        "name": name,
        "arch": ref["arch"],
        "layout": layout,
        "latent_shape": (c, f, h, w),
        "model_input_shape": (c, f, h, w) if layout == "BCFHW" else (f, c, h, w),
        "num_classes": ref["num_classes"],
        "class_names": [data.class_name(i) for i in range(ref["num_classes"])],
        "num_blocks": len(getattr(model, attr)),
        "blocks_attr": attr,
        "training": ref.get("training", {}),
    }


def encoder_hidden_states(info: dict, labels: list[int] | torch.Tensor | None) -> torch.Tensor:
    """``(B, tokens, dim)`` conditioning for class labels; ``labels=None`` gives one null row."""
    if labels is None:
        return info["null_embedding"][None]
    idx = torch.as_tensor(labels, dtype=torch.long)
    return info["class_embeddings"][idx]
