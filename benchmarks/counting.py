"""Count the transformer blocks a method actually executes.

Cache hooks (diffusers' and ours) skip work by replacing a module's ``forward``; PyTorch forward
pre-hooks on that module still fire, so counting calls of the replaced module would count skipped
work too. ``BlockCounter`` therefore counts one step deeper: each block is split into its parts
(its direct children that hold parameters: attention, cross-attention, feed-forward, adaptive
norms), and a pre-hook on one parameterised leaf inside each part (e.g. ``attn1.to_q``) records
that the part really ran. A leaf runs exactly when its part runs, whatever hook replaced the part
or the block.

Parts are weighted by their share of the block's FLOPs, measured once on the model with
``torch.utils.flop_counter.FlopCounterMode`` plus the attention products (``4 Lq Lkv d`` per
attention, which the counter does not see inside diffusers' attention dispatch). A block whose
parts all ran counts 1, a block skipped by a step- or block-cache counts 0, and a block whose
attention was reused (Pyramid Attention Broadcast) counts the share of its other parts.

``compute_fraction = block-equivalents / (calls x blocks)``, over the transformer calls of a
generation (one call per step and guidance branch). A call on a batch holding both guidance
branches (FasterCache's layout) counts each part by the share of the batch rows it processed, so a
step where only the conditional half ran counts half.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def _parts(block: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {
        name: child
        for name, child in block.named_children()
        if any(True for _ in child.parameters())
    }


def _probe_leaf(part: torch.nn.Module) -> torch.nn.Module:
    """First leaf module with parameters inside ``part`` (``part`` itself if it is a leaf)."""
    for mod in part.modules():
        if not any(True for _ in mod.children()) and any(True for _ in mod.parameters(False)):
            return mod
    return part


@torch.no_grad()
def part_weights(model: torch.nn.Module, blocks: torch.nn.ModuleList, example: dict) -> list[dict]:
    """Per block, ``{part name: share of the block's FLOPs}`` measured on one forward."""
    attn_flops: dict[int, int] = {}
    handles = []
    shapes: dict[int, dict[str, tuple]] = {}

    def rec(key, which):
        def hook(mod, args, out):
            shapes.setdefault(key, {})[which] = tuple(out.shape)

        return hook

    for j, block in enumerate(blocks):
        for name, part in _parts(block).items():
            if hasattr(part, "to_q") and hasattr(part, "to_k"):
                key = id(part)
                handles.append(part.to_q.register_forward_hook(rec(key, "q")))
                handles.append(part.to_k.register_forward_hook(rec(key, "k")))
    try:
        with FlopCounterMode(display=False) as fc:
            model(**example)
    finally:
        for h in handles:
            h.remove()
    for key, s in shapes.items():
        q, k = s["q"], s["k"]  # (B, Lq, d), (B, Lkv, d)
        attn_flops[key] = 4 * q[0] * q[1] * k[1] * q[-1]
    counts = {k: sum(v.values()) for k, v in fc.get_flop_counts().items()}
    root = next(iter(counts)) if counts else ""
    # Module names are "<ClassName>.<path>"; find the prefix used for the blocks.
    names = {m: n for n, m in model.named_modules()}
    prefix = type(model).__name__
    out = []
    for block in blocks:
        w = {}
        for name, part in _parts(block).items():
            fqn = f"{prefix}.{names[part]}"
            w[name] = counts.get(fqn, 0) + attn_flops.get(id(part), 0)
        total = sum(w.values()) or 1
        out.append({k: v / total for k, v in w.items()})
    del root
    return out


class BlockCounter:
    """Counts executed block-equivalents per transformer call (see module docstring)."""

    def __init__(self, model: torch.nn.Module, blocks: torch.nn.ModuleList, weights: list[dict]):
        self.blocks = blocks
        self.weights = weights
        self.num_blocks = len(blocks)
        self.calls: list[list[float]] = []  # per call, per block executed share
        self._current: list[float] | None = None
        self._rows = 1
        self._handles = []
        for j, block in enumerate(blocks):
            for name, part in _parts(block).items():
                leaf = _probe_leaf(part)
                self._handles.append(leaf.register_forward_pre_hook(self._hook(j, name)))

    def _hook(self, j: int, name: str):
        def hook(mod, args):
            if self._current is not None:
                rows = args[0].shape[0] if args and isinstance(args[0], torch.Tensor) else 0
                share = min(1.0, rows / self._rows) if rows else 1.0
                self._current[j] += self.weights[j][name] * share

        return hook

    def begin_call(self, rows: int = 1) -> None:
        """Start counting a call whose full batch has ``rows`` rows."""
        self._rows = rows
        self._current = [0.0] * self.num_blocks

    def end_call(self) -> list[float]:
        cur = self._current
        self._current = None
        cur = [min(1.0, round(x, 6)) for x in cur]
        self.calls.append(cur)
        return cur

    def reset(self) -> None:
        self.calls = []
        self._current = None

    def compute_fraction(self) -> float:
        if not self.calls:
            return 0.0
        return sum(map(sum, self.calls)) / (len(self.calls) * self.num_blocks)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
