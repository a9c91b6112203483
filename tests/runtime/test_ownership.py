"""What the runtime keeps across steps is never a piece's output (``runtime/ownership.py``),
and ``max_cache_bytes`` caps what a graph's streams keep.

Under CUDA graphs a piece's outputs are overwritten at the next replay; on CPU the same rule is
checked by holding every piece output of a generation and comparing storages with everything
the streams keep."""

from __future__ import annotations

import pytest
import torch

import pc_compile
from benchmarks.host_reads import configurations
from benchmarks.loop import Loop, compiled_wan
from pc_compile.runtime import ownership, registry
from pc_compile.runtime.executor import Executor
from pc_compile.runtime.memory import kept_tensors

STEPS = 12


def _storages(tensors) -> set:
    return {(t.device, t.untyped_storage().data_ptr()) for t in tensors
            if t.untyped_storage().nbytes()}


def _kept_and_produced(options: dict, monkeypatch) -> tuple[set, set, dict]:
    """(storages kept by the streams, storages of every piece output, stats) after a
    generation; every piece output is held, so no storage is reused by the allocator."""
    produced = []
    call_piece = Executor.call_piece

    def holding(self, number, args):
        out = call_piece(self, number, args)
        produced.extend(t for t in (out if isinstance(out, (tuple, list)) else (out,))
                        if isinstance(t, torch.Tensor))
        return out

    monkeypatch.setattr(Executor, "call_piece", holding)
    model, inputs, compiled = compiled_wan(dict(options, piece_compiler="eager"))
    with torch.no_grad():
        Loop(steps=STEPS)(compiled, inputs)
    kept = []
    for graph, table in registry.tables_of(model):
        for state in table.all_streams():
            kept.extend(kept_tensors(graph.engine.kept_objects(state)))
    return _storages(kept), _storages(produced), pc_compile.stats(compiled)


CONFIGS = [c for c in configurations() if c[0] != "off"]


@pytest.mark.parametrize("label,options", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_kept_tensors_are_never_piece_outputs(label, options, monkeypatch):
    kept, produced, stats = _kept_and_produced(options, monkeypatch)
    assert kept, "the streams keep nothing: the check would be empty"
    assert not kept & produced, f"{label}: {len(kept & produced)} kept storages are outputs"


def test_the_check_finds_a_kept_piece_output(monkeypatch):
    """Without the copies, the cached outputs are the pieces' own outputs: the check above
    would fail."""
    monkeypatch.setattr(ownership, "is_piece_output", lambda t: False)
    kept, produced, _ = _kept_and_produced({"preset": "flash"}, monkeypatch)
    assert kept & produced


def test_keep_copies_only_piece_outputs():
    ownership.new_call()
    out = torch.randn(3)
    ownership.mark((out, 1))
    fresh = out * 2
    kept_out, kept_fresh, kept_view = ownership.keep((out, fresh, out[1:]))
    assert kept_out is not out and torch.equal(kept_out, out)
    assert kept_fresh.untyped_storage().data_ptr() == fresh.untyped_storage().data_ptr()
    assert kept_view.untyped_storage().data_ptr() != out.untyped_storage().data_ptr()
    ownership.new_call()
    kept = ownership.keep(out)  # marks last one denoiser call
    assert kept.untyped_storage().data_ptr() == out.untyped_storage().data_ptr()


def _run_capped(cap: int | None):
    model, inputs, compiled = compiled_wan({
        "preset": "flash", "piece_compiler": "eager", "max_cache_bytes": cap})
    totals = []

    def after_step(_):
        totals.append(pc_compile.stats(compiled)["kept_bytes"])

    with torch.no_grad():
        Loop(steps=STEPS, after_step=after_step)(compiled, inputs)
    return pc_compile.stats(compiled), totals


def test_max_cache_bytes_holds():
    free, _ = _run_capped(None)
    streams = list(free["per_stream"].values())
    assert len(streams) == 2 and all(s["skipped_steps"] > 0 for s in streams)
    cond_bytes = streams[0]["kept_bytes"]
    # Room for the first stream only: the second computes every step, the first still reuses.
    with pytest.warns(UserWarning, match="max_cache_bytes"):
        capped, totals = _run_capped(cond_bytes + streams[1]["kept_bytes"] // 2)
    assert max(totals) <= cond_bytes + streams[1]["kept_bytes"] // 2
    first, second = capped["per_stream"].values()
    assert first["skipped_steps"] > 0
    assert second["skipped_steps"] == 0 and second["kept_bytes"] == 0
    # No room at all: nothing is kept and every step computes.
    with pytest.warns(UserWarning, match="max_cache_bytes"):
        none, totals = _run_capped(0)
    assert max(totals) == 0 and none["kept_bytes"] == 0
    assert none["skipped_steps"] == 0


def test_max_cache_bytes_is_checked():
    with pytest.raises(ValueError, match="max_cache_bytes"):
        pc_compile.PreciseCacheConfig(max_cache_bytes=-1)
    with pytest.raises((TypeError, ValueError), match="max_cache_bytes"):
        pc_compile.PreciseCacheConfig(max_cache_bytes=True)
