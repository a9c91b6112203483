"""The sampling settings: the DPM-Solver++ scheduler, the shift, the named settings, the prompts."""

import json

import pytest
import torch

from benchmarks import metrics, models, run, sampling


def test_dpm_is_dpm_solver_pp_on_flow_sigmas():
    s = sampling.make_scheduler("dpm")
    assert type(s).__name__ == "DPMSolverMultistepScheduler"
    assert s.config.prediction_type == "flow_prediction" and s.config.use_flow_sigmas
    assert s.config.flow_shift == 3.0 and s.config.algorithm_type == "dpmsolver++"
    assert sampling.make_scheduler("dpm", 6.0).config.flow_shift == 6.0
    assert sampling.make_scheduler("euler", 6.0).config.shift == 6.0
    assert sampling.make_scheduler("unipc", 6.0).config.flow_shift == 6.0
    assert "dpm" in sampling.SCHEDULERS
    with pytest.raises(ValueError, match="unknown scheduler"):
        sampling.make_scheduler("ddim")


@pytest.mark.parametrize("scheduler", sampling.SCHEDULERS)
def test_each_step_passes_a_float_view_of_the_schedule(scheduler):
    # As WanPipeline's ``t.expand``: a view, so that the backend can read the steps to come
    # (UniPC's and DPM-Solver++'s integer timesteps are cast once, not per step).
    model, info = models.load_reference("cogvideox-tiny")
    seen = []

    def fn(hidden_states, timestep, encoder_hidden_states, ctx):
        seen.append(timestep)
        return sampling.plain(model)(hidden_states, timestep, encoder_hidden_states, ctx)

    sampling.sample(fn, info, 0, 100, scheduler, 4)
    bases = {id(t._base) for t in seen}
    assert len(seen) == 8 and len(bases) == 1 and None not in {t._base for t in seen}
    base = seen[0]._base
    assert base.dtype == torch.float32 and base.shape == (4,)
    assert [float(t[0]) for t in seen[::2]] == base.tolist()


@torch.no_grad()
def test_dpm_solves_the_same_ode_as_unipc():
    # Two second-order solvers of one ODE agree far better with each other than with Euler.
    model, info = models.load_reference("cogvideox-tiny")
    x = {s: sampling.sample(sampling.plain(model), info, 0, 100, s, 20)
         for s in ("euler", "unipc", "dpm")}
    assert all(torch.isfinite(v).all() for v in x.values())
    close = metrics.psnr(x["dpm"], x["unipc"])
    assert close > 45 and close > metrics.psnr(x["dpm"], x["euler"]) + 5


@torch.no_grad()
def test_the_shift_changes_the_trajectory():
    model, info = models.load_reference("cogvideox-tiny")
    a = sampling.sample(sampling.plain(model), info, 0, 100, "euler", 6)
    b = sampling.sample(sampling.plain(model), info, 0, 100, "euler", 6, shift=3.0)
    c = sampling.sample(sampling.plain(model), info, 0, 100, "euler", 6, shift=8.0)
    assert torch.equal(a, b) and not torch.allclose(a, c, atol=1e-3)


def test_named_settings_fill_guidance_shift_and_steps():
    cfg = run.resolve(run.parse_args(["--setting", "hard"]))
    hard = run.SETTINGS["hard"]
    assert (cfg["guidance"], cfg["shift"], cfg["steps"]) == (
        hard["guidance"], hard["shift"], hard["steps"])
    cfg = run.resolve(run.parse_args(["--setting", "hard", "--guidance", "7", "--steps", "20,50"]))
    assert (cfg["guidance"], cfg["shift"], cfg["steps"]) == (7.0, hard["shift"], [20, 50])
    cfg = run.resolve(run.parse_args([]))
    assert (cfg["guidance"], cfg["shift"], cfg["steps"]) == (5.0, 3.0, [30])
    assert run.resolve(run.parse_args(["--schedulers", "euler,unipc,dpm"]))["schedulers"] == [
        "euler", "unipc", "dpm"]
    with pytest.raises(SystemExit, match="unknown schedulers"):
        run.resolve(run.parse_args(["--schedulers", "ddim"]))


def test_eight_prompts_cover_the_eight_classes():
    prompts = run.prompts_for({"num_classes": 8}, 8)
    assert sorted(label for label, _ in prompts) == list(range(8))
    assert [seed for _, seed in prompts] == list(range(100, 108))
    assert run.prompts_for({"num_classes": 8}, 3) == prompts[:3]


def test_a_run_records_its_setting_in_every_row(tmp_path):
    run.main(["--models", "cogvideox-tiny", "--schedulers", "dpm", "--steps", "4",
              "--setting", "hard", "--methods", "uniform+linear", "--prompts", "1",
              "--threads", "1", "--out", str(tmp_path), "--no-plots"])
    res = json.loads((tmp_path / "results.json").read_text())
    hard = run.SETTINGS["hard"]
    assert res["meta"]["guidance"] == hard["guidance"] and res["meta"]["shift"] == hard["shift"]
    for r in res["rows"]:
        assert (r["bench_setting"], r["guidance"], r["shift"], r["scheduler"]) == (
            "hard", hard["guidance"], hard["shift"], "dpm")
    linear = [r for r in res["rows"] if r["method"] == "uniform+linear"]
    assert sorted(r["setting"] for r in linear) == sorted(
        run.REGISTRY["uniform+linear"].sweep)
    # 4 steps: round(f * 4) computed steps of 4, counted by the block hooks.
    for r in linear:
        assert r["compute_fraction"] == pytest.approx(max(1, round(r["setting"] * 4)) / 4)


@torch.no_grad()
def test_hardness_measures_both_reuse_forms():
    from benchmarks import hardness

    model, info = models.load_reference("cogvideox-tiny")
    r = hardness.measure(model, info, "euler", 6, 5.0, 3.0, [(0, 100)])
    assert set(r) == {"uniform", "uniform+linear", "per_prompt"}
    assert 0 < r["uniform"] < 100 and 0 < r["uniform+linear"] < 100
    assert r["uniform"] != r["uniform+linear"]
