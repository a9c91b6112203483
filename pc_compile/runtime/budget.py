"""The compute budget: where a generation's computed steps go so that it spends a set fraction.

``compute_budget=b`` asks a generation to spend ``b`` of its uncached work, counted as
``stats()["compute_fraction"]`` counts it: block evaluations plus probe evaluations times the
probe's cost in blocks, over steps x blocks. The controller below runs once per step of the
stream that decides (the first guidance branch) and is all host arithmetic on numbers the
engine already has: it adds no device-to-host read.

How it lands on the budget
    The steps of the generation, and those at the end of the schedule that the guards will
    compute (within ``end_span`` step sizes of zero), are read from the pipeline's schedule
    tensor when the timestep is a view of it (``TimestepReader.following``: exact from the
    first step; Wan, CogVideoX, LTX-Video); otherwise they are estimated from the timesteps
    seen so far (``schedule.fit_schedule``, refitted at every step from the third; on the
    second, ``schedule.prior_fit``, the line through the first two under shift 3), the end
    steps with a margin: reserving one too many only turns the last free step into a computed
    one, reserving one too few would overspend. What is left after those, in
    block-equivalents, is the *free budget* of the *free steps* (those no guard forces).
    Every step re-derives the compute rate ``q`` the free steps still need from the free
    budget, so an early deviation is paid back later, and the decision is forced where no
    choice is left: compute where the budget covers every free step left, reuse where it no
    longer covers one whole step.

Guards the budget cannot afford
    The warm-up and the end steps are honoured as far as they lengthen no run of reuses
    against the evenly spaced schedule of the budget; beyond that both are shortened in
    proportion (``trimmed``; the first and the last step always compute), and the steps they
    no longer force are free. Otherwise a short schedule or a small budget spends everything
    on the guards and reuses the whole middle: at 10 steps and 0.38, five warm-up steps and
    ``end_span=4.5`` left one partial step and six reuses in a row (design measurement 23).

Where the computed steps go
    On a free step the step rule measures its *score*, the predicted error of this step's
    output if reused (``Verdict.score``), and the controller weights it by the step size the
    sampler will take with it (the next one, from the fitted schedule): a reused output's error
    enters the latent times that step size. The damage of the reuses since the last computed
    step is summed; the step computes once the sum reaches ``mean score / q``. With a constant
    score this computes one step in ``1/q``, the evenly spaced schedule; a score that rises
    brings the next computed step forward, one that falls lets the run go on. With no step rule
    the score is constant: the blind evenly spaced schedule of the same budget and reuse forms.
    The runs are planned on the whole steps the budget buys (``_computes``), never on the
    fraction of one it cannot spend: planned on that fraction, the early runs came out short
    and the reuses they left piled up before the end of the schedule, where the steps are
    largest (design measurement 25).

Granularity
    At 10 steps one step is a tenth of the work, so whole steps can miss the budget by 0.05.
    The part of the budget that is not a whole step goes to one *partial step*: when the free
    budget no longer covers a whole step, the next step computes its first ``k`` blocks and
    bypasses the others with the residual the last computed step left across them (the
    output of its last block minus the input of block ``k``, recorded on every computed step
    for the ``k`` the budget's remainder asks for). Where the blocks form no chain (glue
    between them, several block lists) the remainder is not spent. Where a whole step or none
    misses the budget by under ``TOLERANCE`` of the work (half a step is under 0.02 from 26
    steps on), the remainder is rounded instead: a partial step bypasses blocks with an
    older residual, and costs more than an extrapolated reuse (8 dB near the end of the
    schedule, design measurement 22; at 10 steps a partial step in place of an extrapolated
    one lost 1.6 dB while spending more, design measurement 23).

The probe
    A free step is measured. A forced step (warm-up, the run cap, nothing cached yet) is
    measured only for a rule with a probe (LFCache: ``keeps_probe``) and only when a free step
    follows: its spectrum is what LFCache chooses a later reuse's form by, the last output or
    the extrapolation (without it, it always extrapolated: 5.9 dB lost at turbo's schedule on
    cogvideox-tiny, design measurement 22). The end of the schedule, an exhausted budget and a
    budget covering every step left are not measured. Each probe is charged at its cost
    divided by the number of guidance branches that follow the decision, as ``stats`` counts
    it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from pc_compile.runtime.schedule import KnownSchedule, fit_schedule, prior_fit

# Reserve an end step when its timestep lies within this many times ``end_span`` step sizes of
# zero: the fitted timesteps are an estimate, and an end step missed would overspend.
END_MARGIN = 1.15

# The fitted end of the schedule may cross a step boundary by this much (in steps) without
# changing the estimated step count: integer-rounded timesteps move it by a few hundredths.
HYSTERESIS = 0.06

# A step computes whole, or not at all, rather than partly, where that misses the budget by at
# most this fraction of the generation's work (the landing the controller promises is 0.02).
TOLERANCE = 0.02

COMPUTE, REUSE, FREE, PARTIAL = "compute", "reuse", "free", "partial"


@dataclass
class BudgetState:
    """One generation of the deciding stream, as the controller tracks it."""

    timesteps: list = field(default_factory=list)  # distinct timesteps seen, in order
    spent: float = 0.0  # block-equivalents spent, probes shared over the branches
    steps: int = 0
    damage: float = 0.0  # the weighted scores of the reuses since the last computed step
    run: int = 0  # the reuses since the last computed step
    score_sum: float = 0.0
    score_count: int = 0
    streams: int = 1  # guidance branches following this stream's decisions (itself included)
    tail: int | None = None  # the k asked to be recorded at the last computed step
    estimated_steps: int | None = None
    last: dict = field(default_factory=dict)  # the last call's numbers, for the trace


@dataclass(frozen=True)
class Call:
    """The controller's call on a step: ``kind`` is COMPUTE, REUSE or PARTIAL (forced, with
    ``reason``) or FREE (the rule's score decides, at compute rate ``rate``)."""

    kind: str
    reason: str = ""
    rate: float = 0.0
    blocks: int = 0  # PARTIAL, FREE: the blocks the step computes if it computes
    weight: float = 1.0  # the step size the sampler takes with this step's output
    measure: bool = True  # FREE: ask the rule for its score (False: decide blindly)
    free_steps: int = 0  # FREE: the free steps left, this one included
    computes: int = 0  # FREE: the whole steps the budget computes among them
    partial_slot: int = 0  # FREE: 1 where the last free step is left to a partial step


class BudgetController:
    """Places a generation's computed steps to spend ``budget`` of its uncached work."""

    def __init__(self, budget: float, num_blocks: int, end_span: float, partial: bool,
                 keeps_probe: bool = False, placement: str = "score", warmup_steps: int = 0):
        self.budget = budget
        self.num_blocks = max(1, num_blocks)
        self.end_span = end_span
        self.warmup_steps = warmup_steps
        self.partial = partial  # partial steps possible (the blocks form a chain)
        # The rule's probe also runs on the forced computed steps before a free one (its
        # spectra choose the reuse forms: LFCache); else only free steps are measured.
        self.keeps_probe = keeps_probe
        # "score": the rule's score places the computed steps; "even": they are spaced evenly
        # whatever the score (the rule then only chooses each reuse's form).
        self.placement = placement

    # -- estimates ---------------------------------------------------------------------------

    def _end_steps(self, fit, index: int, total: int) -> int:
        """Steps after ``index`` the end-of-schedule guard will compute (with a margin)."""
        count = 0
        for j in range(index + 1, total):
            t, before = fit.timestep(j), fit.timestep(j - 1)
            size = before - t
            if j == total - 1 or (size > 0 and t < END_MARGIN * self.end_span * size):
                count += 1
        return count

    def trimmed(self, fit, total: int) -> tuple[int, int]:
        """The warm-up steps and end steps the budget affords: those that lengthen no run of
        reuses. The budget's ``n`` computed steps, evenly spaced with the first and the last
        among them, leave ``n - 1`` gaps for ``total - n`` reuses; where ``n - 1 > total - n``
        some gaps are empty, computed steps side by side, and up to ``2 n - total - 1`` of
        them can stand at the start and the end as the guards without any run growing. The
        guards get that room (at least the first and the last step); where they ask more,
        both are shortened in proportion and the steps they no longer force are free. Each
        guard step beyond the room turns a run of reuses one step longer, and a longer run
        costs more than a guard step gains wherever the budget is tight (design measurement
        23: at 10 steps and 0.38 the configured guards took the whole budget and left six
        reuses in a row; at 30 steps and 0.465 they cost 8-13 dB on wan-tiny).

        One exception: where the end guard asks for two steps or more, it keeps the last two
        even beyond the room, as long as that leaves the longest run of reuses no longer
        (the average run of the free steps, rounded up, unchanged). They are the two largest
        steps of a shifted schedule, and a reuse's error enters the latent times the step
        size: with the last step alone computed, the step before it was reused (`#ee#e#`)
        and turbo's budget lost 3.4-5.5 dB at 30 and 50 steps on the tuning models; where
        the extra computed step makes the longest run longer (flash's budget at 20 steps,
        any budget under one half at 10) it lost about 1 dB (design measurement 25). Nor
        where fewer than two whole steps would be left between the guards: on a short
        schedule the probes and the partial step's slot make the runs longer than this
        average says (flash at 12 steps: ``#....#...###``)."""
        end = self._end_steps(fit, -1, total)
        warm = min(self.warmup_steps, total)
        room = max(2.0, 2 * self.budget * total - total + 1)
        if warm + end <= room + 0.5:
            return warm, end
        share = room / (warm + end)
        warm, last = max(1, round(warm * share)), max(1, round(end * share))
        if (end >= 2 and last < 2 and self.budget * total - (warm + 2) >= 2
                and self._longest_run(total, warm + 2) == self._longest_run(total, warm + last)):
            last = 2
        return warm, last

    def _longest_run(self, total: int, guards: int) -> int:
        """The longest run of reuses of the budget's evenly spaced schedule when ``guards``
        computed steps stand at the start and the end: the average run between the free
        computed steps, rounded up."""
        computed = self.budget * total
        runs = computed - guards + 1
        return math.ceil((total - computed) / runs - 1e-9) if runs > 0 else total

    # -- per step ----------------------------------------------------------------------------

    def begin(self, bs: BudgetState, index: int, timestep: float | None, may_reuse: bool,
              has_cache: bool, probe_cost: float, following: list | None = None,
              by_schedule: bool = False) -> Call:
        """The call on step ``index`` of the generation (``may_reuse``: the shared guards let
        it reuse; ``has_cache``: there is something to reuse; ``probe_cost``: one probe in
        block-equivalents, 0 if the rule has none; ``following``: the timesteps of the steps
        to come when the pipeline's schedule tensor gives them, else None; ``by_schedule``:
        only the warm-up or the end of the schedule forbids the reuse, which the budget may
        lift: ``trimmed``)."""
        if timestep is not None and (not bs.timesteps or timestep < bs.timesteps[-1]):
            bs.timesteps.append(timestep)
        if following is not None and len(bs.timesteps) == index + 1:
            # The schedule is known: the steps, the end and the step sizes are exact.
            fit = KnownSchedule((*bs.timesteps, *following))
        else:
            # From the third step the fit; on the second, the line through the first two
            # under the common shift of 3 (an estimate: the second step is planned, not
            # computed for want of one; a wrong guess is paid back from the third).
            fit = (fit_schedule(bs.timesteps) if len(bs.timesteps) >= 3
                   else prior_fit(bs.timesteps))
        if fit is None:
            bs.last = {}
            # Probed: the rule's first spectra (LFCache's form choice needs two computed ones).
            return Call(COMPUTE, "no schedule estimate yet",
                        measure=self.keeps_probe and self.budget < 1)
        total = fit.total_steps()
        before = bs.estimated_steps
        if not isinstance(fit, KnownSchedule) and before is not None and total != before and abs(
                fit.end_index - (min(total, before) + 0.004)) < HYSTERESIS:
            # The fit's end moved across a step boundary by a rounding error (schedules
            # that round their timesteps to integers): keep the earlier estimate.
            total = before
        total = max(total, index + 1)
        bs.estimated_steps = total
        weight = max(fit.timestep(index) - fit.timestep(index + 1), 0.0)
        blocks = self.num_blocks
        warm, last = self.trimmed(fit, total)
        end = min(self._end_steps(fit, index, total), max(0, min(last, total - 1 - index)))
        if not may_reuse and by_schedule and warm <= index < total - last:
            may_reuse = True  # a guard the budget cannot afford: the step is free
        left = self.budget * total * blocks - bs.spent - end * blocks  # for this step on
        free_steps = total - index - end  # this one included
        probe = probe_cost / max(1, bs.streams)
        rate = (left - probe * free_steps) / (blocks * free_steps) if free_steps > 0 else 0.0
        bs.last = {"budget_rate": round(rate, 4), "estimated_steps": total,
                   "budget_left": round(left / blocks, 4)}
        if not may_reuse or free_steps <= 0:
            # The guards (or the end) compute this step, as far as the budget reaches; a step
            # before a free one is probed, for the spectra a later reuse's form is chosen by.
            # The last step computes whole even where the budget cannot pay for it (a
            # schedule of a few steps: the first and the last cost more than the budget).
            call = (Call(COMPUTE, "the last step", weight=weight) if index >= total - 1
                    else self._within(bs, left, has_cache, "guards", weight, total))
            later = free_steps - 1 if may_reuse is False and free_steps > 0 else 0
            return replace(call, measure=self.keeps_probe and call.kind == COMPUTE
                           and later > 0 and left < free_steps * blocks - 1e-6)
        if left >= free_steps * blocks - 1e-6:
            return Call(COMPUTE, "budget covers every step left", weight=weight, measure=False)
        if left < blocks + probe - 1e-6:
            # At most one step is left, not its probe: placed blindly among the free steps,
            # whole or not at all where that misses the budget by under ``TOLERANCE``, else
            # its first blocks (a partial step), if it can.
            k = self._blocks(bs, left, total)
            if k <= 0:
                return Call(REUSE, "budget exhausted", weight=weight, measure=False)
            # A whole step (the remainder rounded up) is placed as the others are; a
            # partial one takes the last free step.
            return Call(FREE, "no budget for the probe", rate=left / (blocks * free_steps),
                        weight=weight, measure=False, free_steps=free_steps, blocks=k,
                        computes=int(k == blocks))
        computes, slot = self._computes(rate * free_steps, total)
        return Call(FREE, rate=rate, weight=weight, free_steps=free_steps, blocks=blocks,
                    computes=computes, partial_slot=slot)

    def _computes(self, steps: float, total: int) -> tuple[int, int]:
        """What a budget of ``steps`` (in steps) buys among the free steps: the whole
        computed steps, its remainder rounded as the last free step will round it
        (``_rounded``); and 1 where the remainder is left to a partial step instead (the
        blocks allow one), which the last free step takes."""
        whole = math.floor(steps + 1e-9)
        rest = steps - whole
        if rest <= 1e-9:
            return whole, 0
        up = self._rounded(rest * self.num_blocks, total)
        if up is None:
            return whole, int(self.partial)
        return whole + int(up), 0

    def _within(self, bs: BudgetState, left: float, has_cache: bool, reason: str,
                weight: float, total: int) -> Call:
        """A step computed as far as ``left`` (block-equivalents) reaches: whole, its first
        blocks (a partial step), or reused."""
        b = self.num_blocks
        if not has_cache or left >= b - 1e-6:
            return Call(COMPUTE, reason, weight=weight)
        whole = self._rounded(left, total)
        if whole is not None:
            return Call(COMPUTE if whole else REUSE, reason if whole else "budget exhausted",
                        weight=weight)
        k = self._partial(bs, left)
        if k:
            return Call(PARTIAL, f"{reason}, budget remainder", blocks=k, weight=weight)
        return Call(COMPUTE if reason == "guards" else REUSE, reason, weight=weight)

    def _blocks(self, bs: BudgetState, left: float, total: int) -> int:
        """The blocks a step with ``left`` block-equivalents left to spend computes: all of
        them, or none, where that misses the budget by under ``TOLERANCE`` of the
        generation's work (a partial step bypasses blocks with an older residual, which
        costs far more than it saves: design measurement 22); else the blocks of a partial
        step (0 where none is possible)."""
        whole = self._rounded(left, total)
        if whole is not None:
            return self.num_blocks if whole else 0
        return self._partial(bs, left)

    def _rounded(self, left: float, total: int) -> bool | None:
        """Whether a step with ``left`` block-equivalents left computes whole (True) or not at
        all (False) where either misses the budget by under ``TOLERANCE`` of the generation's
        work; None where both miss it by more (the remainder is a partial step's)."""
        b = self.num_blocks
        if min(left, b - left) < TOLERANCE * total * b - 1e-6:
            return left >= b / 2
        return None

    def _partial(self, bs: BudgetState, left: float) -> int:
        """The blocks of a partial step spending ``left`` block-equivalents: those recorded at
        the last computed step, when within a block of ``left``; else 0 (not possible)."""
        k = bs.tail
        if self.partial and k is not None and abs(k - left) <= 1.0:
            return k
        return 0

    def decide(self, bs: BudgetState, call: Call, score: float | None) -> bool:
        """Whether a free step computes, from the rule's ``score`` (None or not finite: no
        information, the mean score is used).

        ``C`` whole computed steps are left for the ``F`` free steps (this one included;
        ``call.computes``, with the last free step set apart where the budget leaves it a
        partial step), so the reuses between them form ``C + 1`` runs (the end of the
        schedule computes after the last) of ``(F - C) / (C + 1)`` steps on average. The
        step computes when reusing it would take the current run's damage more than half a
        step's past that of an average run, but never before the run reaches the average
        rounded down, and always once it would pass the average rounded up: the score moves
        the computed steps only between the most even runs (design measurement 23: where it
        moved them further, the runs it lengthened, or the end of the schedule that paid for
        the runs it shortened, lost more than its placement gained). A constant score gives
        the evenly spaced schedule; the rate is re-derived at every step, so the rounding of
        one run is paid back by the next."""
        has = (self.placement == "score" and score is not None and math.isfinite(score)
               and score >= 0)
        if has:
            bs.score_sum += score * call.weight
            bs.score_count += 1
        mean = bs.score_sum / bs.score_count if bs.score_count else 1.0
        if mean <= 0:
            mean = 1.0
        damage = score * call.weight if has else mean
        computes = call.computes
        # The reuses left, the current run's included, over the runs left (the last free
        # step is the partial step's where the budget leaves one).
        run = (call.free_steps - call.partial_slot - computes + bs.run) / (computes + 1)
        # The last free step spends what is left (a partial step's blocks at most): no
        # later step can.
        # Evenness first: every run lies between the average run left rounded down and
        # rounded up (the most even runs the steps left allow); the score chooses which runs
        # are the longer.
        longest, shortest = math.ceil(run - 1e-9), math.floor(run + 1e-9)
        compute = (call.free_steps <= 1 or bs.run + 1 > longest
                   or (bs.damage + damage / 2 > run * mean and bs.run >= shortest))
        bs.last.update(score=round(damage / mean, 4), run_damage=round(bs.damage / mean, 4),
                       target_run=round(run, 4))
        bs.damage = 0.0 if compute else bs.damage + damage
        bs.run = 0 if compute else bs.run + 1
        return compute

    def account(self, bs: BudgetState, blocks: int, probed: bool, probe_cost: float,
                computed: bool) -> int | None:
        """Charge a step; returns the block a computed step should record the residual from
        (the first bypassed block of a later partial step), or None."""
        bs.spent += blocks + (probe_cost / max(1, bs.streams) if probed else 0.0)
        bs.steps += 1
        if computed:
            bs.damage = 0.0
            bs.run = 0
        total = bs.estimated_steps
        if not (computed and self.partial and total):
            return None
        # What the budget will leave that is not a whole step: a later partial step's blocks.
        b = self.num_blocks
        remainder = (self.budget * total * b - bs.spent) % b
        k = int(round(remainder))
        bs.tail = k if 0 < k < b else None
        return bs.tail

    def fraction(self, bs: BudgetState) -> float | None:
        """The fraction spent so far by this stream's decisions."""
        return bs.spent / (bs.steps * self.num_blocks) if bs.steps else None
