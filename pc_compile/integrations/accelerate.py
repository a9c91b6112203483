"""accelerate's module hooks: what runs inside them, for the probe.

``accelerate.hooks.add_hook_to_module`` (used by ``pipe.enable_model_cpu_offload()`` and
``cpu_offload_with_hook``) keeps the module's forward as ``module._old_forward``, its hook as
``module._hf_hook``, and sets ``module.forward`` to a function that runs the hook's
``pre_forward`` (move the weights and the arguments to the execution device), the old forward,
then ``post_forward``. The backend compiles what follows the pre-forward (``capture`` reads that
frame). The probe runs inside the model's call, after the pre-forward has put everything on the
device, so it calls the old forward directly: through the hook it would break the graph at the
compiler-disabled pre-forward again and be compiled in the same resume frame as the model,
spending the model's recompile slots.

One order of calls loses the compiled model whatever the backend:
``pipe.enable_model_cpu_offload()``, then ``pipe.transformer = torch.compile(...)``. At the end
of each generation the pipeline removes and re-adds its hooks on every component, here the
``OptimizedModule``; accelerate's ``remove_hook_from_module`` reads ``_old_forward`` through
the wrapper (which forwards unknown attributes to the model) and sets the wrapper's ``forward``
to the model's uncompiled forward. From the second generation on, nothing reaches Dynamo
(measured with plain ``torch.compile`` too: 8 compiled calls in the first generation of 4
steps, none in the second). ``warn_if_hooks_undo_compile`` says so once, with what to do
instead: compile in place (``pipe.transformer.compile(...)``) or compile before enabling the
offload.
"""

from __future__ import annotations

import sys
import warnings
import weakref

from pc_compile.errors import OffloadWarning

_warned: weakref.WeakSet = weakref.WeakSet()


def hooked_forward(module):
    """The forward that accelerate's hook wraps, when the hook wraps ``module``'s own forward
    (``module.forward`` is the hook's function); None otherwise. A hook added to a
    ``torch.compile`` wrapper of the module also stores ``_hf_hook`` and ``_old_forward`` on
    the module (the wrapper forwards attributes), but wraps the wrapper's forward: not this."""
    forward = getattr(module, "_old_forward", None)
    wrapper = vars(module).get("forward")
    if getattr(module, "_hf_hook", None) is None or forward is None or wrapper is None:
        return None
    return forward if getattr(wrapper, "__wrapped__", None) == forward else None


def inner_forward(module):
    """``module``'s forward inside accelerate's hook, or ``module`` itself when it has none."""
    forward = hooked_forward(module)
    return module if forward is None else forward


def warn_if_hooks_undo_compile(module) -> bool:
    """Warn (once per module) when ``module`` carries accelerate's hook and is compiled through
    a ``torch.compile(module)`` wrapper, which the pipeline's re-hooking unwraps (see above).
    Called while Dynamo compiles: the wrapper's ``__call__`` frame is among the callers."""
    if hooked_forward(module) is None or module in _warned:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        wrapper = frame.f_locals.get("self")
        if getattr(wrapper, "_orig_mod", None) is module and wrapper is not module:
            _warned.add(module)
            warnings.warn(
                f"precisecache: {type(module).__name__} carries accelerate's offload hook "
                "(pipe.enable_model_cpu_offload()) and is compiled through a torch.compile() "
                "wrapper; when the pipeline re-adds its hooks after a generation, accelerate "
                "sets the wrapper's forward to the uncompiled one, so later generations run "
                "uncompiled and uncached. Compile in place instead "
                "(pipe.transformer.compile(backend='precisecache', options=...)) or call "
                "torch.compile before enable_model_cpu_offload()",
                OffloadWarning,
                stacklevel=2,
            )
            return True
        frame = frame.f_back
    return False
