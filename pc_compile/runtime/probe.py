"""The low-resolution probe: the same network run on a downsampled copy of the latent.

PreciseCache measures each step's Low-Frequency Difference on a cheap trial run: the latent
downsampled 2x in time and 4x4 in space. This file decides the probe's size and runs it:

* sizes are rounded to multiples of the patch size and never fall below ``min_tokens`` tokens
  per frame (the spatial factor is lowered until they do not), nor below two frames when the
  latent has two or more (a single frame is a different regime for video models, and a shape
  Dynamo's guards on the full graph never covered);
* under context parallelism the probe runs through the same split and gather as the model
  (each rank its share of the probe's tokens), so its token count must be a multiple of the
  degree (``multiple``): the spatial factor is lowered until it is, else the frames are kept;
* ``ProbeNetwork`` runs the network (compiled by the front, a separate graph) on the probe
  inputs and returns its prediction in the dense layout ``(B, C, F, H, W)`` the metric wants.
  It runs the module whose weights the call runs: Dynamo serves every instance of a model class
  from one graph (Wan 2.2's ``transformer_2`` from the graph of ``transformer``), so the front
  tells the probe which module holds which weights (``serve``).

How the latent is laid out (which dimensions are frames, height and width; what else in the call
describes the grid) is handed over by the front as a layout object: anything with ``grid(call)``,
``probe_call(call, grid)`` and ``output_video(output, call, grid)``, whose grids are dataclasses
with ``frames, height, width, patch_t, patch_h, patch_w`` (``pc_compile.capture.layouts``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
import weakref

import torch

from pc_compile.runtime.weights import weights_identity


def probe_grid(grid, factors: tuple[int, int, int], min_tokens: int, multiple: int = 1):
    """The probe's grid for ``grid`` downsampled by ``factors`` = (time, height, width): a grid
    of the same type (a dataclass), so the runtime needs no layout class of its own. Its token
    count is a multiple of ``multiple`` where any grid between it and ``grid`` allows."""
    ft, fh, fw = factors

    def scaled(size: int, factor: float, patch: int) -> int:
        cells = max(1, round(size / factor / patch))
        return min(size, cells * patch)

    frames = scaled(grid.frames, ft, grid.patch_t)
    if grid.frames >= 2:
        frames = max(frames, min(grid.frames, 2 * grid.patch_t))
    sh, sw = float(fh), float(fw)
    while True:
        height, width = scaled(grid.height, sh, grid.patch_h), scaled(grid.width, sw, grid.patch_w)
        tokens = (height // grid.patch_h) * (width // grid.patch_w)
        divides = tokens * (frames // grid.patch_t) % multiple == 0
        if (tokens >= min_tokens and divides) or (sh <= 1 and sw <= 1):
            break
        sh, sw = max(1.0, sh / math.sqrt(2)), max(1.0, sw / math.sqrt(2))
    if tokens * (frames // grid.patch_t) % multiple:
        frames = grid.frames  # the full grid: the model's own call splits it
    return dataclasses.replace(grid, frames=frames, height=height, width=width)


class ProbeNetwork:
    """Runs the network at the probe size and returns its prediction as dense video.

    ``network(module, call)`` runs ``module`` compiled for the probe (graphs of their own,
    traced at the probe's shapes) on the arguments ``call``; the module is the one whose weights
    the call's graph input ``weights`` is (``serve(key, module)``, keyed by
    ``weights.weights_identity``; None: the graph takes no parameter, one module).
    ``template`` is the model's call at compile time, into which each call's graph inputs are
    put back (``bind``: graph input index -> ``(argument, path)``, the path indexing into a
    nested argument, e.g. QwenImage's ``img_shapes``: a graph traced with dynamic sizes takes
    those ints as inputs). The grid is read from each call, so a graph that serves several
    shapes probes each at its own size; ``last_ratio`` is the probe's share of the tokens at
    the last call (its cost, per evaluation, in full-step equivalents).
    """

    GRIDS = 64  # probe grids remembered (by full grid)

    def __init__(self, network, template: dict, bind: dict[int, tuple[str, tuple]], layout,
                 factors: tuple[int, int, int], min_tokens: int, weights: int | None = None,
                 multiple: int = 1):
        self.network = network
        self.weights = weights
        self.modules: dict[tuple, weakref.ref] = {}
        self._first: weakref.ref | None = None
        self._unknown_said = False
        self.template = template
        self.bind = bind
        self.layout = layout
        self.factors = factors
        self.min_tokens = min_tokens
        self.multiple = multiple  # the probe's tokens split over this many ranks
        self._grids: dict = {}
        self.full_grid, self.grid = self.grids(template)
        self.token_ratio = self.last_ratio = ratio(self.grid, self.full_grid)

    def grids(self, call: dict):
        """(the call's grid, the probe's grid for it)."""
        full = self.layout.grid(call)
        grid = self._grids.get(full)
        if grid is None:
            if len(self._grids) >= self.GRIDS:
                self._grids.pop(next(iter(self._grids)))
            grid = self._grids[full] = probe_grid(full, self.factors, self.min_tokens,
                                                  self.multiple)
        return full, grid

    def key_of(self, inputs) -> tuple:
        """The key of the weights this call runs (as ``CachedGraph`` keys its state)."""
        return ("any",) if self.weights is None else weights_identity(inputs[self.weights])

    def serve(self, key: tuple, module) -> None:
        """Calls whose weights have ``key`` run ``module``'s probe."""
        self.modules[key] = weakref.ref(module)
        if self._first is None:
            self._first = self.modules[key]

    def module_of(self, inputs):
        """The module whose weights this call runs; the first one served, with a warning, if
        the front could not find it (the probe then measures another model's prediction)."""
        ref = self.modules.get(self.key_of(inputs))
        module = ref() if ref is not None else None
        if module is not None:
            return module
        first = self._first() if self._first is not None else None
        if not self._unknown_said:
            self._unknown_said = True
            warnings.warn(
                "precisecache: the probe could not find the module whose weights this call runs "
                f"(another instance of {type(first).__name__} served by the same graph); it runs "
                "the weights of the module the graph was compiled for, so its measurements "
                "follow that model",
                stacklevel=3,
            )
        return first

    def call_of(self, inputs) -> dict:
        call = dict(self.template)
        for index, (name, path) in self.bind.items():
            call[name] = put(call.get(name), path, inputs[index])
        return call

    def __call__(self, inputs) -> torch.Tensor:
        call = self.call_of(inputs)
        full, grid = self.grids(call)
        self.last_ratio = ratio(grid, full)
        result = self.network(self.module_of(inputs), self.layout.probe_call(call, grid))
        output = result[0] if isinstance(result, (tuple, list)) else getattr(result, "sample",
                                                                              result)
        return self.layout.output_video(output, call, grid)


def ratio(grid, full) -> float:
    """The probe's tokens over the full latent's."""
    return (grid.frames * grid.height * grid.width) / (full.frames * full.height * full.width)


def put(container, path: tuple, value):
    """``container`` with the item at ``path`` replaced by ``value`` (copies along the path;
    tuples stay tuples)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(container, dict):
        return {**container, head: put(container[head], rest, value)}
    items = list(container)
    items[head] = put(items[head], rest, value)
    return tuple(items) if isinstance(container, tuple) else items
