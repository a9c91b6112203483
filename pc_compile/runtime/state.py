"""Cache state that lives across calls: one ``StreamState`` per guidance stream.

A diffusion pipeline calls the denoiser once per step and guidance branch. WanPipeline, for
example, calls it twice per step (cond, then uncond) with the same latent and timestep: the two
calls must never see each other's cache. Streams are told apart by a key the caller cannot get
wrong by accident:

* an explicit name, when an integration sets one with ``named_stream("cond")`` or hands one
  to ``lookup`` (diffusers' ``cache_context``, read by ``pc_compile.integrations``);
* otherwise the identity of the conditioning tensor (``encoder_hidden_states``: the pipeline
  builds it once per generation and passes the same tensor at every step), together with the
  shapes and dtypes of all inputs, so that a new shape never meets a cache made for another.

A stream starts a new generation when its timestep rises; ``reset()`` forces one. A timestep
equal to the last one is not a new generation but another evaluation of the same step
(``StreamState.evaluation_in_step``): FlowMatchHeun evaluates twice at each timestep after the
first, and any scheduler may call the denoiser twice per step. A generation cut short (the
pipeline's ``_interrupt``) is followed by a clean one: the next generation's first timestep
lies above the last one reached, and where it does not (a generation cut after its first step)
the caller's word that a generation ended (``StreamTable.end_generation``; a diffusers
pipeline's return, heard by ``pc_compile.integrations``) starts one. What a stream caches is
owned by the engine and its rules (``StreamState.memory``); this file owns identity,
generations and counters.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch

_stream_name: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pc_compile_stream_name", default=None
)

# The steps within this many step sizes of t = 0 always compute unless a config says otherwise
# (``PreciseCacheConfig.end_span``): the last step, and Euler's one before it.
END_SPAN = 1.5


def named_scope() -> bool:
    """Whether the caller named the streams of this call (``named_stream``)."""
    return _stream_name.get() is not None


@contextlib.contextmanager
def named_stream(name: str):
    """Calls made inside this context belong to the stream ``name`` (for integrations)."""
    token = _stream_name.set(name)
    try:
        yield
    finally:
        _stream_name.reset(token)


@dataclass
class StreamCounters:
    """What happened in one stream since the last ``reset()``; every field is a plain number."""

    steps: int = 0
    full_steps: int = 0
    skipped_steps: int = 0
    probe_evals: int = 0
    probe_work: float = 0.0  # what the probe cost, in block evaluations (its share of tokens)
    block_evals: int = 0
    block_bypasses: int = 0
    generations: int = 0
    nonfinite_probes: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class StreamState:
    """One guidance stream: its counters, its position in the generation and its cache."""

    name: str
    counters: StreamCounters = field(default_factory=StreamCounters)
    last_timestep: float | None = None
    previous_timestep: float | None = None  # the timestep of the step before this one
    step_in_generation: int = 0
    memory: object = None  # the engine's (``engine.StreamMemory``); dropped at a new generation
    # Which evaluation of this step the current call is: 0 for the step's first, 1 for a second
    # call at the same timestep (Heun's), and so on. Rules that take one decision per step
    # decide on evaluation 0; the later evaluations of the step compute.
    evaluation_in_step: int = 0
    ended: bool = False  # the caller said the generation ended: the next call starts one
    # The timesteps of the steps after this one when the caller's schedule is known
    # (``TimestepReader.following``), else None.
    following: list | None = None
    cache_off: bool = False  # over ``max_cache_bytes``: computes every step, keeps nothing
    order: int = 0  # streams of a table in the order they started
    trace: list = field(default_factory=list)
    finished: list = field(default_factory=list)  # counters of each finished generation
    generation_base: dict = field(default_factory=dict)  # counters when this one started

    def generations(self) -> list[dict]:
        """The counters of each generation of this stream, the current one last."""
        now = self.counters.as_dict()
        current = {k: v - self.generation_base.get(k, 0) for k, v in now.items()}
        return [*self.finished, current] if current["steps"] else list(self.finished)

    def step_size(self) -> float | None:
        """The last step size in the timestep (from the step before to this one), or None
        before a generation's second step."""
        t, before = self.last_timestep, self.previous_timestep
        if t is None or before is None or before <= t:
            return None
        return before - t

    def near_end(self, span: float = END_SPAN) -> bool:
        """Whether this step's timestep lies within ``span`` step sizes (the last one) of zero:
        an estimate of the steps left that needs no step count. 1.5 catches the last step of a
        schedule (and Euler's one before it); the presets' 4.5 the last three of UniPC and the
        last four of Euler at shift 3."""
        size = self.step_size()
        return size is not None and 0 <= self.last_timestep < span * size

    def start_generation(self) -> None:
        if self.counters.steps > self.generation_base.get("steps", 0):
            self.finished.append(self.generations()[-1])
        self.generation_base = self.counters.as_dict()
        self.memory = None
        self.trace.clear()
        self.step_in_generation = 0
        self.evaluation_in_step = 0
        self.ended = False
        self.last_timestep = None
        self.previous_timestep = None
        self.counters.generations += 1


def tensor_identity(t: torch.Tensor) -> tuple:
    """A key that is stable while the same tensor is passed again."""
    return (t.device.type, t.device.index, t.data_ptr(), tuple(t.shape), t.dtype)


def without_address(identity: tuple) -> tuple:
    """A ``tensor_identity`` less the address: device, shape and dtype."""
    return identity[:2] + identity[3:]


class DecisionGroup(NamedTuple):
    """What makes guidance branches one step's group, whose first branch decides for all:
    the same ``timestep`` and the same ``latent`` tensor (``tensor_identity``), or, where
    both branches are named (diffusers' cache contexts), the same ``shape`` (the latent's
    ``without_address``; None where the stream is not named)."""

    latent: tuple | None
    shape: tuple | None
    timestep: float | None

    def matches(self, other: DecisionGroup) -> bool:
        same = self.latent == other.latent or (
            self.shape is not None and self.shape == other.shape)
        return same and self.timestep == other.timestep


class StreamTable:
    """The streams of one compiled graph, least recently used evicted past ``max_streams``.

    Evicting a stream drops its cached tensors but keeps its counters, so stats stay whole.
    """

    def __init__(self, max_streams: int):
        self.max_streams = max_streams
        self._live: OrderedDict[tuple, StreamState] = OrderedDict()
        self._retired: list[StreamState] = []
        self._names = 0
        self._short_lived = 0
        self._group: tuple | None = None

    def lookup(self, identity: tuple, signature: tuple, name: str | None = None) -> StreamState:
        """The stream for a call: by explicit name if one is set (``named_stream``, else
        ``name``), else by ``identity``; a different input ``signature`` (shapes, dtypes) is
        always a different stream. A call whose ``name`` is new takes over the unnamed stream
        of its identity, if any: the calls made before the caller's name could be read (the
        first, while the model compiles) stay in its stream. (A ``named_stream`` is always a
        stream of its own.)"""
        scoped = _stream_name.get()
        explicit = scoped if scoped is not None else name
        key = (("named", explicit) if explicit is not None else identity, signature)
        state = self._live.get(key)
        if state is None and scoped is None and explicit is not None:
            state = self._live.pop((identity, signature), None)
            if state is not None:
                state.name = explicit
                self._live[key] = state
        if state is None:
            name = explicit if explicit is not None else f"stream{self._names}"
            self._names += 1
            state = StreamState(name=name, order=self._names)
            state.counters.generations = 0
            self._live[key] = state
            while len(self._live) > self.max_streams:
                _, old = self._live.popitem(last=False)
                old.memory = None
                self._retired.append(old)
                self._short_lived += old.counters.steps <= 1
                if self._short_lived == 4 * self.max_streams:
                    warnings.warn(
                        "precisecache: a new guidance stream starts at almost every call, so "
                        "nothing can be reused. Streams are told apart by the identity of the "
                        "encoder_hidden_states tensor: pass the same tensor at every step, or "
                        "name streams with pc_compile.runtime.state.named_stream().",
                        stacklevel=4,
                    )
        else:
            self._live.move_to_end(key)
        return state

    def enter_step(self, state: StreamState, timestep: float | None) -> None:
        """Advance ``state`` to this call: a new generation if the timestep rose, another
        evaluation of the same step if it did not change, else the next step."""
        first = state.counters.generations == 0 or state.ended
        known = timestep is not None and state.last_timestep is not None
        if known and timestep == state.last_timestep and not first:
            state.counters.steps += 1
            state.evaluation_in_step += 1
            return
        if first or (known and timestep > state.last_timestep):
            state.start_generation()  # before counting this call: it belongs to the new one
        else:
            state.step_in_generation += 1
            state.evaluation_in_step = 0
        state.counters.steps += 1
        state.previous_timestep = state.last_timestep
        state.last_timestep = timestep

    def end_generation(self) -> None:
        """The caller's generation is over (a diffusers pipeline returned): the next call of
        every stream starts a new one, whatever its timestep. Counters stay."""
        for state in self._live.values():
            state.ended = True
        self._group = None

    def shared_decision(self, group: DecisionGroup, state: StreamState):
        """The plan another stream of ``group`` took for this step, or None."""
        if group.latent is None or self._group is None:
            return None
        key, leader, reuse = self._group
        if not key.matches(group) or leader is state:
            return None
        return reuse

    def decider(self) -> StreamState | None:
        """The stream that took the last recorded decision."""
        return None if self._group is None else self._group[1]

    def record_decision(self, group: DecisionGroup, state: StreamState, plan) -> None:
        """``state`` decided this step's ``plan``: the other streams of ``group`` follow it."""
        self._group = (group, state, plan)

    def live_streams(self) -> list[StreamState]:
        """The streams that may hold a cache, least recently used first."""
        return list(self._live.values())

    def all_streams(self) -> list[StreamState]:
        return self._retired + list(self._live.values())

    def reset(self) -> None:
        self._live.clear()
        self._retired.clear()
        self._names = 0
        self._short_lived = 0
        self._group = None
