"""diffusers' ``cache_context``: the names of the guidance streams and the ends of generations.

How diffusers 0.42.1 does it: a pipeline wraps each denoiser call in
``transformer.cache_context(name, **fields)`` ("cond" / "uncond" for separate guidance calls,
"cond_uncond" for a batched one). ``CacheMixin.cache_context`` keeps nothing on the module
itself: ``hooks.hooks._set_cache_context`` walks the module's ``HookRegistry``
(``module._diffusers_hook``, and those of its children) and hands a ``CacheContext`` to every
``StateManager`` attribute of every *stateful* hook, then ``None`` when the call is done. At the
end of ``__call__``, ``DiffusionPipeline.maybe_free_model_hooks`` calls ``_reset_stateful_cache``
on each component, which calls ``reset_state`` on those same hooks.

So a stateful hook in the registry hears both, and ``listen(module)`` adds one: a
``ContextListener`` that never takes part in ``forward``. ``HookRegistry.register_hook`` would
wrap ``module.forward``, and Dynamo would recompile the model for the new forward; the listener
is instead put first in the registry with a function reference that leaves the chain as it is
(removing it, or any hook after it, restores the forward it found). The compiled graph reads
``ContextListener.name`` at each call, a plain attribute read outside Dynamo's tracing.

Where the registry is not laid out as in 0.42.1, ``listen`` returns None and streams keep
their names from tensor identity.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

HOOK_NAME = "pc_compile_context_listener"


@functools.lru_cache(maxsize=None)
def _listener_class():
    from diffusers.hooks.hooks import BaseState, ModelHook, StateManager

    class _Stateless(BaseState):
        def reset(self, *args, **kwargs) -> None:
            pass

    class ContextListener(ModelHook):
        """Hears the pipeline's cache contexts (``contexts``) and generation ends."""

        _is_stateful = True

        def __init__(self):
            super().__init__()
            self.contexts = StateManager(_Stateless)
            self.on_end: Callable[[], None] | None = None

        @property
        def name(self) -> str | None:
            context = self.contexts._context
            return None if context is None else context.name

        def reset_state(self, module):
            if self.on_end is not None:
                self.on_end()
            return module

    return ContextListener


def listen(module, on_end: Callable[[], None] | None = None):
    """The listener of ``module``'s cache contexts, added on the first call; None when the
    module has no ``cache_context`` (not a diffusers model) or the registry is not the known
    one. ``on_end`` is called when the pipeline ends a generation (it replaces an earlier one).
    """
    if "diffusers" not in sys.modules or not callable(getattr(module, "cache_context", None)):
        return None
    try:
        from diffusers.hooks.hooks import HookFunctionReference, HookRegistry
    except ImportError:
        return None
    registry = HookRegistry.check_if_exists_or_initialize(module)
    hooks = getattr(registry, "hooks", None)
    order = getattr(registry, "_hook_order", None)
    refs = getattr(registry, "_fn_refs", None)
    if not (isinstance(hooks, dict) and isinstance(order, list) and isinstance(refs, list)):
        return None
    listener = hooks.get(HOOK_NAME)
    if listener is None:
        listener = _listener_class()()
        reference = HookFunctionReference()
        # What the first hook calls (or the forward itself): removing the listener sets this
        # back where it already is.
        reference.forward = refs[0].forward if refs else module.forward
        listener.fn_ref = reference
        hooks[HOOK_NAME] = listener
        order.insert(0, HOOK_NAME)
        refs.insert(0, reference)
    if on_end is not None:
        listener.on_end = on_end
    return listener
