"""Read which module of the denoiser produced each FX node.

Dynamo records, on every node it traces, ``node.meta["nn_module_stack"]``: an ordered mapping
from an internal key to ``(path, module_type)``, outermost module first. The path strings
differ between models and torch versions::

    L['self'].__dict__['_modules']['blocks'].0
    L['s']._modules['blocks']._modules['3']
    L['self'].transformer_blocks[2]

All of them name the same thing, a dotted module path relative to the compiled root
(``blocks.0``, ``blocks.3``, ``transformer_blocks.2``). This file turns them into that form and
finds, for every node, the repeated block it belongs to (if any). It is analysis only: nothing
here changes a graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch.fx

# One path component: ['name'], ["name"], [3], .name, .3
_COMPONENT = re.compile(r"\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]|\[\s*(\d+)\s*\]|\.(\w+)")
# The root of a Dynamo source string: L['self'], G['model'], L['s'] ...
_ROOT = re.compile(r"^\s*[LG]\[\s*['\"][^'\"]*['\"]\s*\]")
# Attribute hops that are how nn.Module stores children, not part of the user's path.
_STORAGE = {"__dict__", "_modules", "_parameters", "_buffers"}


def normalize_module_path(source: str) -> str:
    """Dotted module path relative to the compiled root, e.g. ``blocks.3``.

    >>> normalize_module_path("L['self'].__dict__['_modules']['blocks'].0")
    'blocks.0'
    >>> normalize_module_path("L['s']._modules['blocks']._modules['3']")
    'blocks.3'
    """
    rest = _ROOT.sub("", source, count=1)
    parts = []
    for match in _COMPONENT.finditer(rest):
        name = next(g for g in match.groups() if g is not None)
        if name not in _STORAGE:
            parts.append(name)
    return ".".join(parts)


def module_paths(node: torch.fx.Node) -> list[str]:
    """The normalized module paths of ``node``'s stack, outermost first (root excluded)."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = []
    for value in stack.values():
        source = value[0] if isinstance(value, tuple) else value
        path = normalize_module_path(str(source))
        if path:
            paths.append(path)
    return paths


@dataclass(frozen=True)
class BlockRef:
    """A member of an indexed container: ``list_name`` is the container's path, ``index`` the
    member's position, ``module_type`` the member's class (blocks of one list share it)."""

    list_name: str
    index: int
    module_type: type | None = None

    @property
    def path(self) -> str:
        return f"{self.list_name}.{self.index}"


def outermost_indexed_module(node: torch.fx.Node) -> BlockRef | None:
    """The indexed container member a node sits in, read from the outermost module of its stack.

    Only the outermost module counts: a list nested inside another module (HunyuanVideo's
    token refiner blocks live inside ``context_embedder``) belongs to that module, not to the
    denoiser's chain of blocks. Whether the container really is a chain of repeated blocks is
    decided by the partition pass, which sees all nodes.
    """
    stack = node.meta.get("nn_module_stack") or {}
    for value in stack.values():
        source, module_type = value if isinstance(value, tuple) else (value, None)
        path = normalize_module_path(str(source))
        if not path:
            continue  # the root module itself
        parts = path.split(".")
        for i, part in enumerate(parts):
            if part.isdigit() and i > 0:
                if i == len(parts) - 1:
                    return BlockRef(".".join(parts[:i]), int(part), module_type)
                # The stack skipped the block itself (``blocks.0.attn1`` outermost).
                return BlockRef(".".join(parts[:i]), int(part), None)
        return None
    return None
