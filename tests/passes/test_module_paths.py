import torch

from pc_compile.passes.module_paths import normalize_module_path, outermost_indexed_module


def test_normalize_every_spelling_dynamo_uses():
    cases = {
        "L['self'].__dict__['_modules']['blocks'].0": "blocks.0",
        "L['s']._modules['blocks']._modules['3']": "blocks.3",
        "L['self'].transformer_blocks[2]": "transformer_blocks.2",
        "L['self'].__dict__['_modules']['condition_embedder'].time_embedder.linear_1":
            "condition_embedder.time_embedder.linear_1",
        'G["model"]._modules["single_transformer_blocks"]._modules["11"].attn':
            "single_transformer_blocks.11.attn",
        "L['self']": "",
    }
    for source, expected in cases.items():
        assert normalize_module_path(source) == expected, source


class Block(torch.nn.Module):
    pass


def _node_with_stack(*entries):
    graph = torch.fx.Graph()
    node = graph.call_function(torch.relu, ())
    node.meta["nn_module_stack"] = {f"k{i}": e for i, e in enumerate(entries)}
    return node


def test_outermost_indexed_module_reads_only_the_outermost_module():
    node = _node_with_stack(
        ("L['self'].blocks[4]", Block), ("L['self'].blocks[4].ffn.net[0]", torch.nn.Linear)
    )
    ref = outermost_indexed_module(node)
    assert (ref.list_name, ref.index, ref.module_type) == ("blocks", 4, Block)

    # A list nested in a prologue module is part of that module, not of the block chain.
    nested = _node_with_stack(
        ("L['self'].context_embedder", torch.nn.Module),
        ("L['self'].context_embedder.token_refiner.refiner_blocks[0]", Block),
    )
    assert outermost_indexed_module(nested) is None
    assert outermost_indexed_module(_node_with_stack()) is None
