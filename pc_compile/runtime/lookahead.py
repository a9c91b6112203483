"""Which steps still to come the guards leave free, and whether measuring them pays.

A step rule measures on a step whose decision is forced (warm-up, the end of the schedule)
only for the steps that follow it: LFCache's probe at the warm-up steps gives the first free
step its previous spectrum, the spectra a reuse extrapolates and the largest distance of the
generation. Where no free step follows, such a measurement buys nothing, and on a short
schedule the probes can cost more than every reuse the guards still allow: 10 steps with five
warm-up steps and four end steps leave one free step, a probe on each of the ten costs more
than reusing it saves. So, per step of the deciding stream:

* the *upcoming* timesteps are the schedule's values after this step when the timestep was read
  from the pipeline's schedule tensor (``TimestepReader.following``: exact), else the schedule
  fitted to the distinct timesteps seen so far (``schedule.fit_schedule``, from three on: an
  estimate), else unknown;
* each upcoming step is *free* when the guards that do not depend on the decisions (warm-up,
  ``end_span``) let it reuse; the run cap then allows at most ``L - L // (max_reuse + 1)``
  reuses in a run of ``L`` free steps;
* a forced step is measured only if a free step follows; and a rule running the probe measures
  at all only while the reuses still allowed are worth more than the probes up to the last free
  step (each costing ``probe_cost`` blocks, shared by the guidance branches that follow the
  decision). Not measured, the step computes (``skip`` tells the rule).

Unknown upcoming steps change nothing: the step is measured as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pc_compile.runtime.schedule import fit_schedule


def upcoming(following: Sequence[float] | None, seen: Sequence[float], step: int
             ) -> list[float] | None:
    """The timesteps of the steps after step ``step``: ``following`` when the schedule is
    known, else those of the schedule fitted to ``seen`` (the distinct timesteps of the
    generation so far, this step's last), else None."""
    if following is not None:
        return list(following)
    if len(seen) < 3:
        return None
    fit = fit_schedule(seen)
    if fit is None:
        return None
    return [fit.timestep(i) for i in range(step + 1, fit.total_steps())]


def free_steps(timestep: float, upcoming_steps: Sequence[float], step: int, warmup_steps: int,
               end_span: float) -> list[bool]:
    """For each upcoming step (step ``step + 1 + k`` at ``upcoming_steps[k]``): whether the
    warm-up and the end of the schedule leave it free, as ``Guards.may_reuse`` would."""
    flags = []
    before = timestep
    for k, t in enumerate(upcoming_steps):
        size = before - t if before is not None and before > t else None
        near_end = size is not None and 0 <= t < end_span * size
        flags.append(step + 1 + k >= warmup_steps and not near_end)
        before = t
    return flags


def max_reuses(flags: Sequence[bool], max_reuse: int) -> int:
    """The most reuses the run cap allows over the free steps ``flags`` (runs of free steps
    are separated by forced ones, which compute)."""
    total = run = 0
    for free in [*flags, False]:
        if free:
            run += 1
            continue
        total += run if not max_reuse else run - run // (max_reuse + 1)
        run = 0
    return total


@dataclass(frozen=True)
class Lookahead:
    """What the steps after this one allow."""

    free: int  # upcoming free steps
    reuses: int  # the most reuses they allow
    to_last_free: int  # steps from this one to the last free one, this one included

    def pays(self, probe_fraction: float) -> bool:
        """Whether probing every step up to the last free one (each probe ``probe_fraction``
        of a step) costs less than the reuses still allowed could save."""
        return self.reuses > self.to_last_free * probe_fraction


def look_ahead(timestep: float | None, upcoming_steps: Sequence[float] | None, step: int,
               warmup_steps: int, end_span: float, max_reuse: int) -> Lookahead | None:
    """The ``Lookahead`` of step ``step`` (None: the steps to come are unknown)."""
    if timestep is None or upcoming_steps is None:
        return None
    flags = free_steps(timestep, upcoming_steps, step, warmup_steps, end_span)
    last = max((k for k, free in enumerate(flags) if free), default=-1)
    return Lookahead(free=sum(flags), reuses=max_reuses(flags, max_reuse),
                     to_last_free=last + 2 if last >= 0 else 0)
