"""Wan 2.2's two experts: ``transformer`` and ``transformer_2`` (same class, other weights).

Dynamo serves ``transformer_2`` from the graph compiled for ``transformer`` (parameters are
graph inputs), so one ``CachedGraph`` runs both; its state is kept per set of weights, and its
probe must run the expert whose weights the call runs, or the second expert's decisions are
measured on the first expert's prediction.
"""

from __future__ import annotations

import torch

import pc_compile
from pc_compile.runtime import registry
from tests.pipelines import factory
from tests.pipelines.test_pipelines import EAGER, fresh
from tests.tiny_models import first_output


class RecordingProbe:
    """Wraps a graph's probe and keeps, per call, the inputs and the prediction."""

    def __init__(self, probe):
        self.probe = probe
        self.calls = []

    def __getattr__(self, name):
        return getattr(self.probe, name)

    def __call__(self, inputs):
        prediction = self.probe(inputs)
        self.calls.append((list(inputs), prediction))
        return prediction


def expected_prediction(probe, module, inputs):
    """What the probe should predict: ``module`` itself, uncompiled, at the probe's grid."""
    call = probe.call_of(inputs)
    _, grid = probe.grids(call)
    with torch.no_grad():
        output = first_output(module(**probe.layout.probe_call(call, grid)))
    return probe.layout.output_video(output, call, grid)


def test_each_expert_is_probed_with_its_own_weights():
    tiny = fresh("wan2.2")
    # Flash's short warm-up and end span leave each expert free steps of its own at 16 steps
    # (each expert runs its share of the schedule as its own generation), so both are probed.
    compiled = factory.compile_transformers(tiny, options={"preset": "flash", **EAGER})
    experts = [compiled[name]._orig_mod for name in ("transformer", "transformer_2")]
    tiny.run("A", 1, 16)  # compiles; the graph serves both experts
    ((graph, first),) = registry.tables_of(experts[0])
    ((graph_2, second),) = registry.tables_of(experts[1])
    assert graph_2 is graph and second is not first  # one graph, a state per expert
    recorder = graph.probe = RecordingProbe(graph.probe)
    tiny.run("A", 1, 16)
    probed = {0: 0, 1: 0}
    for inputs, prediction in recorder.calls:
        weights = inputs[graph.roles.weights]
        (which,) = [i for i, m in enumerate(experts) if weights is m.patch_embedding.weight]
        probed[which] += 1
        expected = expected_prediction(recorder.probe, experts[which], inputs)
        torch.testing.assert_close(prediction, expected, rtol=1e-4, atol=1e-5)
    assert probed[0] > 0 and probed[1] > 0, probed
    for name in ("transformer", "transformer_2"):
        assert pc_compile.stats(compiled[name])["fallbacks"] == []
