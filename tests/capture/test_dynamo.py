"""Capture from Dynamo: what is read while Dynamo compiles, and a debug line when it is not."""

import logging

import torch

import pc_compile
from pc_compile.capture import capture, compiled_original, dynamo
from pc_compile.capture.dynamo import graph_input_sources, source_path
from tests.tiny_models import build, capture_graph


def test_the_module_the_call_and_the_sources_are_captured():
    tiny = build("wan")
    seen = []

    def backend(gm, example_inputs):
        seen.append(capture(gm))
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        compiled = torch.compile(tiny.model, backend=backend)
        compiled(**tiny.make_inputs(500.0, 1))
    (got,) = seen
    assert got.owner is tiny.model and got.module is tiny.model
    assert got.call["hidden_states"] is tiny.make_inputs(500.0, 1)["hidden_states"]
    assert "L['kwargs']['timestep']" in got.sources or "L['timestep']" in got.sources
    assert compiled_original(compiled) is tiny.model
    assert source_path("L['self']._modules['proj']._parameters['weight']") == "proj.weight"


def test_a_missing_dynamo_internal_is_said_at_debug_and_the_compile_goes_on(monkeypatch,
                                                                             caplog):
    # As if a torch version had moved the frame Dynamo is translating elsewhere.
    monkeypatch.setattr(dynamo, "CURRENT_FRAME", ("torch._dynamo.symbolic_convert",
                                                  "InstructionTranslator.moved_current_tx"))
    caplog.set_level(logging.DEBUG, logger="pc_compile")
    torch._dynamo.reset()
    tiny = build("plain_dit")
    compiled = torch.compile(tiny.model, backend="precisecache",
                             options={"preset": "off", "piece_compiler": "eager"})
    with torch.no_grad():
        out = compiled(**tiny.make_inputs(500.0, 1))
        torch.testing.assert_close(out, tiny.model(**tiny.make_inputs(500.0, 1)))
    messages = [r.getMessage() for r in caplog.records
                if r.name == "pc_compile" and r.levelno == logging.DEBUG]
    assert any("current frame (InstructionTranslator.moved_current_tx) is not available "
               "(AttributeError" in m for m in messages), messages


def test_graph_inputs_without_sources_are_said_at_debug(caplog):
    caplog.set_level(logging.DEBUG, logger="pc_compile")
    gm = torch.fx.symbolic_trace(torch.nn.Linear(2, 2))  # not traced by Dynamo: no sources
    assert graph_input_sources(gm) == [None]
    assert any("graph input sources" in r.getMessage() for r in caplog.records)
    captured = capture_graph(build("plain_dit").model, build("plain_dit").make_inputs(5.0, 1))
    names = captured.names
    assert {"hidden_states", "timestep", "encoder_hidden_states"} <= set(names)
    roles = pc_compile.capture.find_roles(names, captured.weights)
    assert (roles.hidden, roles.timestep, roles.context) == (
        names.index("hidden_states"), names.index("timestep"),
        names.index("encoder_hidden_states"))
    assert roles.weights_path is not None and "." in roles.weights_path


def _root_hook_that_breaks_the_graph(model):
    """A diffusers hook on the model's root whose pre_forward breaks the graph, as context
    parallelism's split hook does on Wan's 1-D timestep (a logger call Dynamo cannot trace)."""
    from diffusers.hooks.hooks import HookRegistry, ModelHook

    class Breaking(ModelHook):
        def pre_forward(self, module, *args, **kwargs):
            torch._dynamo.graph_break()
            return args, kwargs

    HookRegistry.check_if_exists_or_initialize(model).register_hook(Breaking(), "breaking")


def _captures(model, inputs) -> list:
    """What ``capture`` reads from each graph Dynamo hands over for one call of ``model``."""
    seen = []

    def backend(gm, example_inputs):
        seen.append(capture(gm))
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend=backend)(**inputs)
    return seen


def test_a_forward_behind_a_diffusers_hook_is_captured_as_the_module_s():
    # The graph with the blocks is Dynamo's resumption of the hook's wrapper after pre_forward:
    # its module is the local `module` and its call the pre_forward's result on the stack.
    tiny = build("wan")
    _root_hook_that_breaks_the_graph(tiny.model)
    inputs = tiny.make_inputs(500.0, 1)
    seen = _captures(tiny.model, inputs)
    blocks = [c for c in seen if any(s and "blocks" in s for s in c.sources)]
    assert len(blocks) == 1, [c.sources for c in seen]
    (got,) = blocks
    assert got.owner is tiny.model and got.module is tiny.model
    assert got.call["hidden_states"] is inputs["hidden_states"]
    assert "L['kwargs']['hidden_states']" in got.sources
    weights = [s for s in got.sources if s and "patch_embedding" in s]
    assert weights and all(s.startswith("L['self']") for s in weights), weights


def test_preset_turbo_caches_a_model_behind_a_diffusers_hook():
    tiny = build("wan")
    _root_hook_that_breaks_the_graph(tiny.model)
    torch._dynamo.reset()
    compiled = torch.compile(tiny.model, backend="precisecache",
                             options={"preset": "turbo", "piece_compiler": "eager",
                                      "probe_min_tokens": 1})
    with torch.no_grad():
        for t in range(900, 0, -75):
            compiled(**tiny.make_inputs(float(t), 1))
    stats = pc_compile.stats(compiled)
    assert stats["fallbacks"] == [] and stats["steps"] == 12
    assert stats["skipped_steps"] > 0 and stats["probe_evals"] > 0


def test_a_module_behind_an_accelerate_hook_is_captured_with_its_call():
    """accelerate's hook replaces forward by new_forward(module, *args, **kwargs) and its
    pre_forward is compiler-disabled: Dynamo hands over the resume frame after that break,
    whose call is the (args, kwargs) pair on the stack. Capture finds the module and the call
    and gives the sources their plain names."""
    from accelerate import cpu_offload_with_hook

    tiny = build("wan")
    cpu_offload_with_hook(tiny.model, "cpu")
    inputs = tiny.make_inputs(500.0, 1)
    seen = _captures(tiny.model, inputs)
    got = seen[-1]
    assert got.owner is tiny.model and got.module is tiny.model
    assert torch.equal(got.call["hidden_states"], inputs["hidden_states"])
    assert "L['kwargs']['timestep']" in got.sources
    assert any(s.startswith("L['self']") and s.endswith("['weight']") for s in got.sources if s)
    names = pc_compile.capture.input_names(None, got.owner, got.sources)
    assert {"hidden_states", "timestep", "encoder_hidden_states"} <= set(names)


_BREAK = {"now": True}


def _loop_that_breaks(x):
    for _ in range(2):
        if _BREAK["now"]:
            torch._dynamo.graph_break()
        x = x + 1
    return x


def test_retrace_has_dynamo_translate_a_frame_it_skipped_again():
    # A graph break in a loop: Dynamo runs the function eagerly for good (context
    # parallelism's first call does this to a model's forward, integrations.context_parallel).
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = torch.compile(_loop_that_breaks, backend=backend)
    _BREAK["now"] = True
    try:
        assert compiled(torch.zeros(2)).tolist() == [2.0, 2.0] and graphs == []
        _BREAK["now"] = False
        compiled(torch.zeros(2))
        assert graphs == []  # still skipped: the break is gone, Dynamo's mark is not
        assert dynamo.retrace([_loop_that_breaks])
        assert compiled(torch.zeros(2)).tolist() == [2.0, 2.0] and len(graphs) == 1
        # A code with compiled entries is left alone (its graphs, of other callers too).
        assert not dynamo.retrace([_loop_that_breaks])
        compiled(torch.zeros(2))
        assert len(graphs) == 1
    finally:
        _BREAK["now"] = True


def test_retrace_without_dynamo_s_per_code_state_is_said_at_debug(monkeypatch, caplog):
    monkeypatch.setattr(dynamo, "CODE_STATE", ("torch._C._dynamo.eval_frame", "moved",
                                               "reset_code"))
    caplog.set_level(logging.DEBUG, logger="pc_compile")
    assert not dynamo.retrace([_loop_that_breaks])
    assert "per-code state" in caplog.text
