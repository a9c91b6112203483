"""A call's timestep as a host number, read from the device as seldom as possible.

The runtime needs each step's timestep on the host (a new generation starts when it stops
decreasing; the guards and the reuse forms are functions of it), but every read of a device
tensor is a synchronisation on a GPU. Pipelines make this cheap to avoid:

* the timestep a pipeline passes is a view of its schedule, one tensor holding every step's
  timestep (diffusers' Wan and CogVideoX pipelines pass ``t.expand(batch)`` with ``t`` taken
  from ``scheduler.timesteps``). The schedule is read once, at the first step that passes a view
  of it (the first step of a generation, whose decision is fixed: compute), and each later
  step's timestep is found in that copy by the view's storage offset: no read. The copy is
  trusted while the schedule tensor is alive and unmodified (its version counter);
* the second guidance branch of a step passes the very tensor the first one passed (same
  object, same version): its value is the one already known;
* a Python number is not a device value.

The schedule's values after the current one are also the steps to come (``following``): the
engine's lookahead uses them to know which later steps the guards leave free
(``runtime/lookahead.py``), with no step count from the caller.

Anything else (a fresh timestep tensor per step that is no view of a schedule, as Flux's and
HunyuanVideo's pipelines pass after ``.to(dtype)``) is read once per step, by the first guidance
branch. On a step whose rules measure, that read comes before the rules' own read (LFCache
needs the timestep to extrapolate the probe's spectra): two reads there, not yet one.
"""

from __future__ import annotations

import weakref

import torch

MAX_SCHEDULE = 1 << 14  # a base tensor larger than this is not taken for a schedule


class TimestepReader:
    """Turns the timestep inputs of successive calls into floats."""

    def __init__(self):
        self._schedule: tuple | None = None  # (weakref to the schedule, its version, values)
        self._last: tuple | None = None  # (weakref, version, value, what follows) of the last
        self.reads = 0  # device reads made (schedules and single values)
        # The schedule's timesteps after the last value read from one (distinct values, in
        # order), or None when that value came from no schedule: what the steps to come are.
        self.following: list[float] | None = None

    def value(self, t) -> float:
        if not isinstance(t, torch.Tensor):
            self.following = None
            return float(t)
        last = self._last
        if last is not None and last[0]() is t and last[1] == t._version:
            self.following = last[3]
            return last[2]
        self.following = None
        value = self._from_schedule(t)
        if value is None:
            self.reads += 1
            value = float(t.reshape(-1)[0])
        self._last = (weakref.ref(t), t._version, value, self.following)
        return value

    def _from_schedule(self, t: torch.Tensor) -> float | None:
        base = t._base
        if (base is None or base.numel() > MAX_SCHEDULE or not base.is_contiguous()
                or base.dtype != t.dtype or t.numel() == 0
                or base.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()):
            return None
        offset = t.storage_offset() - base.storage_offset()
        if not 0 <= offset < base.numel():
            return None
        known = self._schedule
        if known is None or known[0]() is not base or known[1] != base._version:
            self.reads += 1
            values = base.reshape(-1).tolist()  # the schedule's one read
            known = self._schedule = (weakref.ref(base), base._version, values)
        values = known[2]
        value = float(values[offset])
        following = []
        for v in values[offset + 1:]:  # a repeated timestep (Heun's) is one step
            if v != (following[-1] if following else value):
                following.append(float(v))
        self.following = following
        return value
