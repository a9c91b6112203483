"""describe_partition: the plain-data description the runtime runs a partitioned graph from.

The runtime never parses graphs (DESIGN.md). After ``partition_blocks`` has cut the graph, this
file reads the top-level graph once and writes down, for every piece, where each of its
arguments comes from (a graph input or an output of an earlier piece), and, for blocks, which
arguments carry the previous block's outputs: the *state* a block bypass adds its cached
residual to. It also groups blocks whose graphs are identical up to names, so that one compiled
kernel serves the whole group.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx

from pc_compile.passes.partition_blocks import EPILOGUE, PROLOGUE


@dataclass(frozen=True)
class Ref:
    """Where a value comes from: graph input ``index`` (``piece is None``) or item ``item`` of
    piece ``piece``'s result (``item is None`` when the piece returns a single value). A
    constant (a non-tensor output of the graph) has ``constant`` set instead."""

    piece: int | None = None
    index: int | None = None
    item: int | None = None
    constant: object = None
    is_constant: bool = False


@dataclass(frozen=True)
class PieceSpec:
    """One piece of the partition.

    ``state_slots`` (blocks only) pairs argument positions with output items: argument
    ``arg`` of this block receives what the previous block of the same list returned as
    ``item``. A bypassed block returns, for each pair, ``args[arg] + residual[item]``.
    """

    name: str
    kind: str  # "prologue" | "block" | "glue" | "epilogue"
    args: tuple[Ref, ...]
    num_outputs: int | None  # None: the piece returns one bare value
    list_name: str | None = None
    index: int | None = None
    state_slots: tuple[tuple[int, int], ...] = ()
    kernel_group: int = -1  # pieces with one group share compiled code


@dataclass(frozen=True)
class PartitionSpec:
    pieces: tuple[PieceSpec, ...]
    outputs: tuple[Ref, ...]
    output_is_tuple: bool
    num_inputs: int
    block_lists: tuple[str, ...] = field(default=())

    @property
    def blocks(self) -> list[int]:
        return [i for i, p in enumerate(self.pieces) if p.kind == "block"]

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def summary(self) -> str:
        """One line per piece: kind, shared kernel group, where arguments come from, and for
        blocks the state slots (argument <- output item) a bypass adds residuals to."""

        def show(ref: Ref) -> str:
            if ref.is_constant:
                return repr(ref.constant)
            if ref.piece is None:
                return f"in{ref.index}"
            name = self.pieces[ref.piece].name
            return name if ref.item is None else f"{name}[{ref.item}]"

        lines = []
        for piece in self.pieces:
            produced = [show(r) for r in piece.args if r.piece is not None or r.is_constant]
            inputs = sum(1 for r in piece.args if r.piece is None and not r.is_constant)
            line = f"{piece.name}: {piece.kind} kernel={piece.kernel_group} inputs={inputs}"
            if produced:
                line += f" from=({', '.join(produced)})"
            line += f" outputs={piece.num_outputs or 1}"
            if piece.kind == "block":
                slots = ", ".join(f"arg{a}<-out{i}" for a, i in piece.state_slots) or "none"
                line += f" state=({slots})"
            lines.append(line)
        lines.append(f"returns: ({', '.join(show(r) for r in self.outputs)})")
        return "\n".join(lines)


def _piece_kind(name: str) -> str:
    if name == PROLOGUE:
        return "prologue"
    if name == EPILOGUE:
        return "epilogue"
    if name.startswith("glue_"):
        return "glue"
    return "block"


def graph_signature(gm: torch.fx.GraphModule) -> str:
    """The graph's structure with every name replaced by its position.

    Two blocks of one list have the same signature when they compute the same function of
    their arguments (their parameters differ, but those arrive as arguments), so one compiled
    kernel can serve both. Placeholder shapes and dtypes are part of the signature.
    """
    index = {}
    lines = []
    for i, node in enumerate(gm.graph.nodes):
        index[node] = i

        def show(a):
            return torch.fx.node.map_arg(a, lambda n: f"%{index[n]}")

        if node.op == "placeholder":
            val = node.meta.get("example_value", node.meta.get("val"))
            desc = f"{tuple(val.shape)}:{val.dtype}" if isinstance(val, torch.Tensor) else ""
            lines.append(f"placeholder {desc}")
        elif node.op == "get_attr":
            # Constants are stored on the piece; identical names in two pieces may still hold
            # different tensors, so they make the piece unique.
            lines.append(f"get_attr {id(gm)}:{node.target}")
        else:
            target = node.target if isinstance(node.target, str) else repr(node.target)
            lines.append(f"{node.op} {target} {show(node.args)} {show(node.kwargs)}")
    return "\n".join(lines)


def describe_partition(split: torch.fx.GraphModule) -> PartitionSpec:
    """Read the top-level graph written by ``partition_blocks`` into a ``PartitionSpec``."""
    inputs: dict[torch.fx.Node, int] = {}
    piece_of: dict[torch.fx.Node, int] = {}
    refs: dict[torch.fx.Node, Ref] = {}
    raw: list[dict] = []
    outputs: tuple[Ref, ...] = ()
    output_is_tuple = True
    getitems: dict[int, set[int]] = {}

    def ref_of(arg) -> Ref:
        if isinstance(arg, torch.fx.Node):
            return refs[arg]
        return Ref(constant=arg, is_constant=True)

    for node in split.graph.nodes:
        if node.op == "placeholder":
            inputs[node] = len(inputs)
            refs[node] = Ref(index=inputs[node])
        elif node.op == "call_module":
            number = len(raw)
            piece_of[node] = number
            raw.append({"name": node.target, "node": node, "args": [ref_of(a) for a in node.args]})
            refs[node] = Ref(piece=number)
            getitems[number] = set()
        elif node.op == "call_function" and node.target is operator.getitem:
            source = node.args[0]
            number = piece_of[source]
            refs[node] = Ref(piece=number, item=node.args[1])
            getitems[number].add(node.args[1])
        elif node.op == "output":
            result = node.args[0]
            output_is_tuple = isinstance(result, (tuple, list))
            items = result if output_is_tuple else (result,)
            outputs = tuple(ref_of(a) for a in items)
        else:
            raise ValueError(f"unexpected node in a partitioned graph: {node.format_node()}")

    pieces: list[PieceSpec] = []
    groups: dict[str, int] = {}
    block_lists: list[str] = []
    for number, r in enumerate(raw):
        module = getattr(split, r["name"])
        out_node = next(n for n in module.graph.nodes if n.op == "output")
        returns_tuple = isinstance(out_node.args[0], (tuple, list))
        num_outputs = len(out_node.args[0]) if returns_tuple else None
        kind = _piece_kind(r["name"])
        list_name = index = None
        state_slots: tuple[tuple[int, int], ...] = ()
        if kind == "block":
            list_name, _, idx = r["name"].rpartition("_")
            index = int(idx)
            if list_name not in block_lists:
                block_lists.append(list_name)
        signature = graph_signature(module)
        group = groups.setdefault(f"{kind}:{list_name}\n{signature}", len(groups))
        pieces.append(
            PieceSpec(
                name=r["name"],
                kind=kind,
                args=tuple(r["args"]),
                num_outputs=num_outputs,
                list_name=list_name,
                index=index,
                state_slots=state_slots,
                kernel_group=group,
            )
        )

    for list_name in block_lists:
        members = [
            i for i, p in enumerate(pieces) if p.kind == "block" and p.list_name == list_name
        ]
        for number, slots in zip(members, _state_slots(pieces, members, split)):
            pieces[number] = _with_slots(pieces[number], slots)
    return PartitionSpec(
        pieces=tuple(pieces),
        outputs=outputs,
        output_is_tuple=output_is_tuple,
        num_inputs=len(inputs),
        block_lists=tuple(block_lists),
    )


def _state_slots(pieces: list[PieceSpec], members: list[int], split) -> list[tuple]:
    """Per block of one list: which arguments receive the previous block's outputs.

    The pairing is read from the first two blocks (block 0's outputs feed block 1's arguments)
    and carried to every block through the blocks' identical structure: a block's output is
    matched to block 0's by the node that produces it. This also covers the last block, whose
    outputs feed the epilogue and which returns only what the epilogue uses. A block can be
    bypassed only if every output it returns is paired with an argument of the same shape;
    otherwise its slots are ``()`` and it is always computed.
    """
    first = pieces[members[0]]
    pairs0 = [
        (position, 0 if ref.item is None else ref.item)
        for position, ref in enumerate(pieces[members[1]].args)
        if ref.piece == members[0]
    ]
    body0, outs0 = _body_and_outputs(getattr(split, first.name))
    result = []
    for number in members:
        piece = pieces[number]
        module = getattr(split, piece.name)
        body, outs = _body_and_outputs(module)
        slots: list[tuple[int, int]] = []
        placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
        returned = _returned(module)
        if body == body0:
            for position, item0 in pairs0:
                if outs0[item0] in outs:
                    slots.append((position, outs.index(outs0[item0])))
        else:
            # Dynamo dropped what the epilogue does not use, so the last block's graph is
            # shorter: pair each output with the one argument of its shape and dtype.
            for item, node in enumerate(returned):
                value = _example(node)
                matches = [
                    position
                    for position, _ in pairs0
                    if _same_layout(_example(placeholders[position]), value)
                ]
                if len(matches) == 1:
                    slots.append((matches[0], item))
        covered = sorted(item for _, item in slots) == list(range(len(returned)))
        for position, item in slots:
            if not _same_layout(_example(placeholders[position]), _example(returned[item])):
                covered = False
        result.append(tuple(slots) if covered else ())
    return result


def _returned(module: torch.fx.GraphModule) -> tuple:
    out = next(n for n in module.graph.nodes if n.op == "output").args[0]
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _body_and_outputs(module: torch.fx.GraphModule) -> tuple[str, list[int]]:
    """The graph's signature without its output line, and the positions of returned nodes."""
    lines = graph_signature(module).split("\n")
    position = {n: i for i, n in enumerate(module.graph.nodes)}
    outputs = [position[n] if isinstance(n, torch.fx.Node) else -1 for n in _returned(module)]
    return "\n".join(lines[:-1]), outputs


def _same_layout(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is not None and b is not None and a.shape == b.shape and a.dtype == b.dtype


def _example(node) -> torch.Tensor | None:
    if not isinstance(node, torch.fx.Node):
        return None
    val = node.meta.get("example_value", node.meta.get("val"))
    return val if isinstance(val, torch.Tensor) else None


def _with_slots(piece: PieceSpec, slots) -> PieceSpec:
    return PieceSpec(**{**piece.__dict__, "state_slots": tuple(slots)})
