"""partition_blocks: cut a traced denoiser into prologue / repeated blocks / glue / epilogue.

Matches: a Dynamo graph whose compute nodes come from a chain of repeated modules, read from
``node.meta["nn_module_stack"]`` (one or more ModuleLists of user blocks, each with at least two
members of one class), for example a two-block Wan model::

    def forward(x, t, ctx, *params):
        emb = patch_embedding(x); temb = time_embedder(t)     # no block
        h = blocks.0(emb, temb, ctx)                          # blocks.0
        h = blocks.1(h, temb, ctx)                            # blocks.1
        return proj_out(norm_out(h, temb))                    # no block

Rewrite to a module whose children are the pieces, called in the original order::

    def forward(x, t, ctx, *params):
        prologue = self.prologue(x, t, ctx, ...);  emb = prologue[0]; temb = prologue[1]
        blocks_0 = self.blocks_0(emb, temb, ctx, ...)
        blocks_1 = self.blocks_1(blocks_0, temb, ctx, ...)
        epilogue = self.epilogue(blocks_1, temb, ...)
        return (epilogue,)

Nodes with no block that sit between two blocks of one list join the block after them; nodes
between the last block of one list and the first of the next (HunyuanVideo's concatenation of
text and video tokens between its double and single blocks) form a ``glue_<k>`` piece.

Why it is safe: the pieces are cut along the original node order, every value crossing a cut
becomes an explicit output of one piece and argument of the next (``split_module``), and no
node is changed, so the rewritten module computes exactly what the original did. The pass
copies the graph first and never edits the module it is handed (Dynamo still holds it).

Under context parallelism of degree ``n`` (``split_degree``), a plan may split the sequence in
the first block's hook (Wan's and QwenImage's at ``blocks.0``): the block's first nodes are then
the split, ``x.chunk(n, dim)[rank]`` (``tensor_split`` for uneven shards), on values from
before the block. They go to the prologue, so that the first block takes the shard and returns
a shard like the others, and its state pairs with its output (a block rule can bypass it). Only
chunks into exactly ``n`` parts that open the first block move; nothing moves without the
degree.

A graph that has no repeated blocks, or whose blocks interleave, raises ``UnsupportedGraph``
with the reason; the backend turns that into its fallback.
"""

from __future__ import annotations

import copy
import operator
from collections import defaultdict

import torch
import torch.fx
from torch.fx.passes.split_module import split_module

from pc_compile.errors import UnsupportedGraph
from pc_compile.passes.module_paths import BlockRef, outermost_indexed_module

PROLOGUE = "prologue"
EPILOGUE = "epilogue"


def _is_compute(node: torch.fx.Node) -> bool:
    return node.op in ("call_function", "call_method", "call_module", "get_attr")


def _block_lists(refs: list[BlockRef | None]) -> set[str]:
    """Indexed containers that are chains of repeated user blocks."""
    indices: dict[str, set[int]] = defaultdict(set)
    types: dict[str, set[type]] = defaultdict(set)
    for ref in refs:
        if ref is None:
            continue
        indices[ref.list_name].add(ref.index)
        if ref.module_type is not None:
            types[ref.list_name].add(ref.module_type)
    lists = set()
    for name, members in indices.items():
        kinds = types[name]
        if len(members) < 2 or len(kinds) != 1:
            continue  # a single member, or an nn.Sequential of unlike layers
        (kind,) = kinds
        if kind.__module__.startswith("torch.nn"):
            continue  # a Sequential/ModuleList of plain layers is not a transformer block
        lists.add(name)
    return lists


_SPLITS = ("chunk", "tensor_split")


def _is_split(node: torch.fx.Node, degree: int) -> bool:
    """``x.chunk(degree, ...)`` or ``x.tensor_split(degree, ...)`` (method or function)."""
    name = node.target if node.op == "call_method" else getattr(node.target, "__name__", None)
    if node.op not in ("call_method", "call_function") or name not in _SPLITS:
        return False
    parts = node.args[1] if len(node.args) > 1 else node.kwargs.get(
        "chunks", node.kwargs.get("indices_or_sections"))
    return parts == degree


def _leading_splits(nodes: list, labels: list, first: int, degree: int) -> int:
    """How many nodes, from ``first`` (the first block's first node), are the context-parallel
    split of its inputs: splits into ``degree`` parts and the ``getitem`` of their parts."""
    split: set[torch.fx.Node] = set()
    count = 0
    for node, label in zip(nodes[first:], labels[first:]):
        if label != labels[first]:
            break
        if _is_split(node, degree):
            split.add(node)
        elif not (node.op == "call_function" and node.target is operator.getitem
                  and node.args[0] in split):
            break
        count += 1
    return count


def segment_names(graph: torch.fx.Graph, split_degree: int = 1) -> dict[torch.fx.Node, str]:
    """The piece each compute node belongs to (analysis only; the graph is not changed);
    ``split_degree``: the context-parallel degree, whose split opening the first block goes to
    the prologue (see the module's docstring)."""
    nodes = [n for n in graph.nodes if _is_compute(n)]
    refs = [outermost_indexed_module(n) for n in nodes]
    lists = _block_lists(refs)
    if not lists:
        raise UnsupportedGraph(
            "no repeated transformer blocks found in the graph's nn_module_stack "
            "(expected a ModuleList with at least two blocks of one class)"
        )
    labels: list[str | None] = [
        f"{r.list_name}.{r.index}" if r is not None and r.list_name in lists else None
        for r in refs
    ]
    block_positions = [i for i, label in enumerate(labels) if label is not None]
    first, last = block_positions[0], block_positions[-1]
    if split_degree > 1:
        moved = _leading_splits(nodes, labels, first, split_degree)
        if moved and moved < sum(label == labels[first] for label in labels):
            labels[first:first + moved] = [None] * moved
            first += moved

    # Unlabelled nodes: before the first block -> prologue, after the last -> epilogue,
    # between blocks of one list -> the next block, between two lists -> a glue piece.
    result: list[str] = []
    glue_count = 0
    previous_block: str | None = None
    next_block_at = {}
    upcoming = None
    for i in range(len(labels) - 1, -1, -1):
        if labels[i] is not None:
            upcoming = labels[i]
        next_block_at[i] = upcoming
    current_glue: str | None = None
    for i, label in enumerate(labels):
        if label is not None:
            result.append(label)
            previous_block = label
            current_glue = None
        elif i < first:
            result.append(PROLOGUE)
        elif i > last:
            result.append(EPILOGUE)
        else:
            following = next_block_at[i]
            same_list = previous_block.rsplit(".", 1)[0] == following.rsplit(".", 1)[0]
            if same_list:
                result.append(following)
            else:
                if current_glue is None:
                    current_glue = f"glue_{glue_count}"
                    glue_count += 1
                result.append(current_glue)

    seen: set[str] = set()
    previous = None
    for node, name in zip(nodes, result):
        if name != previous:
            if name in seen:
                raise UnsupportedGraph(
                    f"the nodes of {name!r} are not contiguous in the graph (node {node.name!r} "
                    f"follows {previous!r}); blocks that interleave cannot be cut apart"
                )
            seen.add(name)
            previous = name
    return dict(zip(nodes, result))


def piece_attribute_name(segment: str) -> str:
    """``blocks.3`` -> ``blocks_3``: the child module name of a piece."""
    return segment.replace(".", "_")


def partition_blocks(gm: torch.fx.GraphModule, split_degree: int = 1) -> torch.fx.GraphModule:
    """Cut ``gm`` into pieces; see the module docstring. ``gm`` itself is left untouched."""
    graph = copy.deepcopy(gm.graph)
    work = torch.fx.GraphModule(gm, graph)
    labels = segment_names(work.graph, split_degree)
    order: dict[str, int] = {}
    for name in labels.values():
        order.setdefault(name, len(order))
    names_by_id = {index: name for name, index in order.items()}

    def callback(node: torch.fx.Node) -> int:
        if node in labels:
            return order[labels[node]]
        # Placeholders and the output are not assigned to a piece by split_module, but a node
        # with no compute (none should reach here) goes with the prologue.
        return order.get(PROLOGUE, 0)

    split = split_module(work, gm, callback, keep_original_order=True)
    # Rename submod_<id> to the piece's own name so that printed graphs read well.
    for node in split.graph.nodes:
        if node.op == "call_module" and node.target.startswith("submod_"):
            piece = piece_attribute_name(names_by_id[int(node.target[len("submod_"):])])
            module = getattr(split, node.target)
            delattr(split, node.target)
            split.add_submodule(piece, module)
            node.target = piece
            node._rename(piece)
    split.graph.lint()
    split.recompile()
    return split
