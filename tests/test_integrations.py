"""pc_compile.integrations: diffusers is read only where it is loaded, and the cache-context
listener leaves the model's forward alone."""

import subprocess
import sys

import torch

from pc_compile.integrations.diffusers import HOOK_NAME, listen
from tests.tiny_models import build


def test_importing_pc_compile_does_not_import_diffusers():
    code = "import sys, pc_compile; assert 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_listener_hears_cache_contexts_and_ends_without_wrapping_forward():
    model = build("wan").model
    forward = model.forward
    ended = []
    listener = listen(model, on_end=lambda: ended.append(True))
    assert listen(model) is listener  # one per model
    assert model.forward == forward and "forward" not in vars(model)
    with model.cache_context("uncond"):
        assert listener.name == "uncond"
    assert listener.name is None
    model._reset_stateful_cache()  # what a pipeline's maybe_free_model_hooks calls
    assert ended == [True]
    model._diffusers_hook.remove_hook(HOOK_NAME)
    assert HOOK_NAME not in model._diffusers_hook.hooks


def test_modules_without_cache_context_are_left_alone():
    assert listen(torch.nn.Linear(2, 2)) is None
