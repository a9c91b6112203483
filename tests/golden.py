"""Printing graphs for golden tests: short, stable across torch versions, readable in a diff."""

from __future__ import annotations

import re

import torch.fx

# Dynamo names a parameter or buffer placeholder after its attribute chain.
_PARAM = re.compile(r"\b[lL]_(?:self|s)_\w*?_(?:parameters|buffers)_\w+?_\b")
_RUN = re.compile(r"P(?:, P)+")


def normalize_gm(gm: torch.fx.GraphModule) -> str:
    """The top-level forward of ``gm`` with parameters as ``P`` (runs as ``P*n``) and no
    ``x = None`` clean-up statements."""
    lines = []
    for line in gm.code.strip().splitlines():
        line = line.split(";  ")[0].rstrip()
        if not line.strip():
            continue
        line = re.sub(r" : torch\.(?:nn\.parameter\.Parameter|Tensor)", "", line)
        line = _PARAM.sub("P", line)
        line = _RUN.sub(lambda m: f"P*{m.group(0).count('P')}", line)
        if re.fullmatch(r"\s*P = P", line):
            continue
        lines.append(line)
    return "\n".join(lines)
