"""Golden and behavioural tests of partition_blocks and describe_partition."""

import copy

import pytest
import torch
from expecttest import assert_expected_inline

from pc_compile.passes import run_passes
from pc_compile.passes.partition_blocks import UnsupportedGraph, partition_blocks
from tests.golden import normalize_gm
from tests.tiny_models import build, capture_graph


@pytest.fixture(scope="module")
def wan_graph():
    tiny = build("wan", num_layers=3)
    captured = capture_graph(tiny.model, tiny.make_inputs(500.0, 1))
    return captured.gm, captured.example_inputs


def test_partitioned_wan_graph(wan_graph):
    gm, _ = wan_graph
    split = partition_blocks(gm)
    assert_expected_inline(
        normalize_gm(split),
        """\
def forward(self, L_kwargs_hidden_states_, P*4, L_kwargs_timestep_, P*4, L_kwargs_encoder_hidden_states_, P*90):
    l_kwargs_hidden_states_ = L_kwargs_hidden_states_
    l_kwargs_timestep_ = L_kwargs_timestep_
    l_kwargs_encoder_hidden_states_ = L_kwargs_encoder_hidden_states_
    prologue = self.prologue(P*2, l_kwargs_hidden_states_, P*2, l_kwargs_timestep_, P*4, l_kwargs_encoder_hidden_states_, P*6)
    getitem = prologue[0]
    getitem_1 = prologue[1]
    getitem_2 = prologue[2]
    getitem_3 = prologue[3]
    getitem_4 = prologue[4]
    getitem_5 = prologue[5]
    blocks_0 = self.blocks_0(getitem, P, getitem_1, P*8, getitem_2, getitem_3, P*6, getitem_4, P*12)
    blocks_1 = self.blocks_1(getitem, P, blocks_0, P*8, getitem_2, getitem_3, P*6, getitem_4, P*12)
    blocks_2 = self.blocks_2(getitem, P, blocks_1, P*8, getitem_2, getitem_3, P*6, getitem_4, P*12)
    epilogue = self.epilogue(P, getitem_5, blocks_2, P*2)
    return (epilogue,)""",
    )


def test_partition_description_of_wan(wan_graph):
    gm, _ = wan_graph
    _, spec = run_passes(gm, None)
    assert_expected_inline(
        spec.summary(),
        """\
prologue: prologue kernel=0 inputs=17 outputs=6
blocks_0: block kernel=1 inputs=27 from=(prologue[0], prologue[1], prologue[2], prologue[3], prologue[4]) outputs=1 state=(arg2<-out0)
blocks_1: block kernel=1 inputs=27 from=(prologue[0], blocks_0, prologue[2], prologue[3], prologue[4]) outputs=1 state=(arg2<-out0)
blocks_2: block kernel=1 inputs=27 from=(prologue[0], blocks_1, prologue[2], prologue[3], prologue[4]) outputs=1 state=(arg2<-out0)
epilogue: epilogue kernel=2 inputs=3 from=(prologue[5], blocks_2) outputs=1
returns: (epilogue)""",
    )


def test_two_stream_blocks_say_which_output_flows_on():
    """HunyuanVideo's double blocks return (hidden, encoder_hidden); its last single block
    returns only the video tokens the epilogue reads."""
    tiny = build("hunyuan_video")
    _, spec = run_passes(capture_graph(tiny.model, tiny.make_inputs(500.0, 1)).gm, None)
    blocks = [spec.pieces[i] for i in spec.blocks]
    assert [b.name for b in blocks] == [
        "transformer_blocks_0", "transformer_blocks_1",
        "single_transformer_blocks_0", "single_transformer_blocks_1",
    ]
    assert [len(b.state_slots) for b in blocks] == [2, 2, 2, 1]
    # Blocks of one list with identical graphs share one compiled kernel.
    assert blocks[0].kernel_group == blocks[1].kernel_group
    assert spec.block_lists == ("transformer_blocks", "single_transformer_blocks")


def test_partition_computes_what_the_graph_computes(wan_graph):
    gm, example_inputs = wan_graph
    before = copy.deepcopy(gm.graph).python_code("self").src
    split = partition_blocks(gm)
    with torch.no_grad():
        expected = gm(*example_inputs)
        actual = split(*example_inputs)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    # The module handed to the pass is left as it was (Dynamo still holds it).
    assert gm.graph.python_code("self").src == before


def test_graph_without_blocks_is_refused_with_the_reason():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4))
    gm, _ = capture_graph_fn(model, torch.randn(2, 4))
    with pytest.raises(UnsupportedGraph, match="no repeated transformer blocks"):
        partition_blocks(gm)


def capture_graph_fn(model, x):
    captured = []

    def record(gm, example_inputs):
        captured.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(model, backend=record)(x)
    return captured[0], None


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)

    def forward(self, x):
        return x + self.linear(x)


class Interleaved(torch.nn.Module):
    """Calls block 0, then block 1, then block 0 again: the blocks cannot be cut apart."""

    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block(), Block()])

    def forward(self, x):
        return self.blocks[0](self.blocks[1](self.blocks[0](x)))


def test_interleaved_blocks_are_refused():
    gm, _ = capture_graph_fn(Interleaved(), torch.randn(2, 4))
    with pytest.raises(UnsupportedGraph, match="not contiguous"):
        partition_blocks(gm)


class SplitInBlockZero(torch.nn.Module):
    """Three blocks; a pre-hook on block 0 keeps one of ``parts`` chunks of its input along the
    sequence, as context parallelism's split hook does at Wan's ``blocks.0``."""

    def __init__(self, parts: int):
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block(), Block(), Block()])
        self.blocks[0].register_forward_pre_hook(lambda _, args: (args[0].chunk(parts, 1)[1],))

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x * 2


@pytest.mark.parametrize("parts, degree, moved", [(2, 2, True), (2, 1, False), (3, 2, False)])
def test_the_context_parallel_split_opening_block_0_goes_to_the_prologue(parts, degree, moved):
    inputs = []

    def record(gm, example_inputs):
        inputs.append((gm, list(example_inputs)))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(SplitInBlockZero(parts), backend=record)(torch.randn(1, 6, 4))
    ((gm, example_inputs),) = inputs
    split, spec = run_passes(gm, None, split_degree=degree)
    def chunks(piece: str) -> bool:
        module = getattr(split, piece, None)  # no prologue: block 0 opens the graph
        return module is not None and any(n.target == "chunk" for n in module.graph.nodes)

    assert chunks("prologue") is moved
    assert chunks("blocks_0") is not moved
    # Block 0 takes the shard and returns one: its state pairs with its output, so a block
    # rule can bypass it like the others; with the split inside it, it never can.
    (first, *_) = spec.blocks
    assert bool(spec.pieces[first].state_slots) is moved
    torch.testing.assert_close(split(*example_inputs), gm(*example_inputs), rtol=0, atol=0)
