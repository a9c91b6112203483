"""``stats`` and ``reset``: what a compiled model computed and reused, and starting afresh.

``stats(compiled)`` sums the counters of every graph Dynamo compiled for the model and lists
each guidance stream. ``compute_fraction`` is block evaluations (the probe's cost included, in
block-equivalents at each call's shape) over steps x blocks: 1.0 for plain computation, lower
when caching. ``fallbacks`` lists what of the model runs a lower tier than asked, and why. Under
a ``compute_budget``, ``budget`` gives the budget asked and the fraction each generation spent
over its streams, and each stream's ``generations_detail`` its own per generation.
``kept_bytes`` is what the streams keep across steps (reuse history, rule states), per stream
in ``per_stream[name]["kept_bytes"]`` with its split in ``per_stream[name]["kept"]``.
"""

from __future__ import annotations

from pc_compile.capture import compiled_original
from pc_compile.runtime import registry

COUNTERS = ("steps", "full_steps", "skipped_steps", "probe_evals", "block_evals", "block_bypasses")


def _tables(compiled, owner=None):
    owner = compiled_original(compiled) if owner is None else owner
    tables = registry.tables_of(owner)
    if not tables and not registry.fallbacks_of(owner):
        raise ValueError(
            "this model has no graph compiled by the precisecache backend yet: compile it with "
            "torch.compile(model, backend='precisecache') and call it at least once"
        )
    return tables


def stats(compiled, detail: bool = False) -> dict:
    """Counters of ``compiled`` since it was compiled or last ``reset``: a JSON-ready dict."""
    totals = {name: 0 for name in COUNTERS}
    block_work = 0.0
    block_slots = 0
    kept_total = 0
    streams = {}
    budget = None  # per generation index: [work, slots], over the streams of budgeted graphs
    owner = compiled_original(compiled)
    for number, (graph, table) in enumerate(_tables(compiled, owner)):
        graph.engine.settle()  # values no decision needed, not read yet: read now, at once
        blocks = graph.spec.num_blocks
        controller = getattr(graph.engine, "budget", None)
        for state in table.all_streams():
            c = state.counters.as_dict()
            for name in COUNTERS:
                totals[name] += c[name]
            work = c["block_evals"] + c["probe_work"]
            slots = c["steps"] * blocks
            block_work += work
            block_slots += slots
            kept = graph.engine.kept(state)
            kept_total += sum(kept.values())
            entry = dict(c, blocks=blocks, compute_fraction=work / slots if slots else 1.0,
                         kept_bytes=sum(kept.values()), kept=kept)
            if controller is not None:
                budget = budget if budget is not None else {"asked": controller.budget,
                                                            "work": []}
                detail_rows = []
                for g, gen in enumerate(state.generations()):
                    g_work = gen["block_evals"] + gen["probe_work"]
                    g_slots = gen["steps"] * blocks
                    detail_rows.append({"steps": gen["steps"], "budget": controller.budget,
                                        "compute_fraction": g_work / g_slots})
                    while len(budget["work"]) <= g:
                        budget["work"].append([0.0, 0])
                    budget["work"][g][0] += g_work
                    budget["work"][g][1] += g_slots
                entry["budget"] = controller.budget
                entry["generations_detail"] = detail_rows
            if detail:
                entry["trace"] = list(state.trace)
            key = state.name if number == 0 else f"graph{number}/{state.name}"
            if key in streams:  # a stream that was evicted and came back
                key = f"{key}#{sum(k.split('#')[0] == key for k in streams) + 1}"
            streams[key] = entry
    result = dict(
        totals,
        streams=len(streams),
        compute_fraction=block_work / block_slots if block_slots else 1.0,
        per_stream=streams,
        kept_bytes=kept_total,
        fallbacks=registry.fallbacks_of(owner),
    )
    if budget is not None:
        # The budget asked and the fraction each generation spent, over all its streams
        # (generations counted per stream, so concurrent streams' n-th generations add up).
        result["budget"] = {"asked": budget["asked"],
                            "generations": [w / s if s else None for w, s in budget["work"]]}
    return result


def reset(compiled) -> None:
    """Start a new generation: drop every cache and counter of ``compiled``."""
    for graph, table in _tables(compiled):
        graph.engine.later.clear()
        table.reset()
