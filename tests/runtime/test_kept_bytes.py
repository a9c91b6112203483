"""``stats()`` reports what each stream keeps across steps, in bytes."""

import torch

import pc_compile
from benchmarks.loop import Loop, compiled_wan


def run(preset: str) -> dict:
    model, inputs, compiled = compiled_wan({"preset": preset, "piece_compiler": "eager"})
    with torch.no_grad():
        Loop(steps=8)(compiled, inputs)
    return pc_compile.stats(compiled), inputs.noise.numel() * 4


def test_kept_bytes_per_stream_and_in_total():
    stats, output_bytes = run("flash")
    streams = stats["per_stream"].values()
    assert stats["kept_bytes"] == sum(s["kept_bytes"] for s in streams) > 0
    for s in streams:
        assert s["kept_bytes"] == sum(s["kept"].values())
        assert s["kept"]["history"] == 2 * output_bytes  # the last two outputs (extrapolation)
        assert s["kept"]["block_rule"] == 0
    cond = next(iter(streams))  # the first branch, which leads and probes
    assert cond["kept"]["step_rule"] > 0  # the probe's spectra, on the leading branch
    off, _ = run("off")
    assert off["kept_bytes"] == 0
