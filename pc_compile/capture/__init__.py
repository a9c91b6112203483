"""Capture: what the backend learns about a compile besides the FX graph.

* ``dynamo``: the module and the call Dynamo is compiling and where each graph input came
  from (the only code touching Dynamo's internals);
* ``roles``: which inputs are the latent, the timestep, the conditioning (``InputRoles``);
* ``layouts`` and ``layout_registry``: how each model class lays out its latent, for the probe.

Imports torch only: never the runtime, which receives ``InputRoles`` and ``Layout`` objects.
"""

from pc_compile.capture.dynamo import Capture, capture, compiled_original
from pc_compile.capture.layout_registry import layout_for, register_layout
from pc_compile.capture.layouts import DenseLayout, Grid, Layout, PackedLayout
from pc_compile.capture.roles import (
    InputRoles,
    find_roles,
    input_names,
    input_paths,
    weights_input,
)

__all__ = [
    "Capture", "capture", "compiled_original", "layout_for", "register_layout", "DenseLayout",
    "Grid", "Layout", "PackedLayout", "InputRoles", "find_roles", "input_names", "input_paths",
    "weights_input",
]
