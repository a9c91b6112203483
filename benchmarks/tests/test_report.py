"""The report's comparison of the project's rows against uniform skipping and the peers."""

import json

import pytest

from benchmarks.report import (
    baselines,
    interpolate,
    load,
    parse_indices,
    preset_rows,
    presets,
    select_prompts,
    split_models,
    tables,
    versus,
)
from benchmarks.report import main as report_main


def row(method, compute, psnr, mode="eager", setting=0):
    return {"model": "m", "scheduler": "euler", "steps": 30, "method": method, "mode": mode,
            "setting": setting, "compute_fraction": compute, "psnr": psnr, "ssim": 0.99}


def test_interpolate_is_linear_between_rows_and_held_outside():
    rows = [row("u", 0.4, 30.0), row("u", 0.6, 40.0), row("u", 1.0, 100.0)]  # 100: identical
    assert interpolate(rows, 0.5) == (35.0, False)
    assert interpolate(rows, 0.3) == (30.0, True)
    assert interpolate(rows, 0.8) == (40.0, True)  # the identical row is left out


def lines(rows):
    return [line.split(" | ") for line in versus({"rows": rows}).splitlines()[2:]]


def test_versus_interpolates_the_peers_and_gives_a_verdict():
    peers = [row("uniform", 0.4, 30.0), row("uniform", 0.6, 40.0),
             row("seacache", 0.45, 36.0), row("seacache", 0.65, 46.0)]
    ours = [row("precisecache", 0.5, 39.0, mode="compiled", setting=0.7),
            row("precisecache", 0.6, 40.0, mode="compiled", setting=0.5)]
    first, second = lines(peers + ours)  # highest compute first
    # At 0.6: uniform 40.0, seacache interpolated 43.5: a loss.
    assert first[3:7] == ["0.600", "40.0", "0.9900", "40.0"]
    assert first[8] == "seacache: 43.5" and first[9] == "no |"
    # At 0.5: uniform 35.0, seacache 38.5 interpolated, 46.0 at 0.65 is beyond 0.5 + 0.04.
    assert second[6:10] == ["35.0", "seacache (0) 0.450: 36.0", "seacache: 38.5", "yes |"]


def test_a_cheaper_peer_row_with_more_psnr_is_a_loss():
    rows = [row("uniform", 0.3, 30.0), row("uniform", 0.7, 40.0), row("taylorseer", 0.4, 45.0),
            row("precisecache", 0.5, 44.0, mode="compiled")]
    (only,) = lines(rows)
    assert only[8] == "uniform: 35.0"  # taylorseer has one row: it spans no compute
    assert only[9] == "no |"


def with_prompts(method, values, mode="eager"):
    """A row whose per-prompt results are (compute, psnr) pairs; its means are deliberately
    wrong, so that only a recomputation can give the right ones."""
    per = [{"label": i, "seed": 100 + i, "compute_fraction": c, "psnr": p, "ssim": 0.9 + i / 100}
           for i, (c, p) in enumerate(values)]
    return {**row(method, -1.0, -1.0, mode=mode), "per_prompt": per}


def test_a_prompt_subset_recomputes_every_rows_means():
    res = {"rows": [with_prompts("uniform", [(0.5, 30.0), (0.5, 34.0), (0.5, 50.0)]),
                    with_prompts("precisecache", [(0.6, 40.0), (0.4, 20.0), (0.5, 60.0)],
                                 mode="compiled"),
                    row("none", 1.0, 100.0)]}
    assert parse_indices("0-1,2") == [0, 1, 2] and parse_indices("1") == [1]
    sub = select_prompts(res, parse_indices("0-1"))
    uniform, ours, reference = sub["rows"]
    assert (uniform["compute_fraction"], uniform["psnr"]) == (0.5, 32.0)
    assert (ours["compute_fraction"], ours["psnr"]) == (0.5, 30.0)
    assert ours["ssim"] == pytest.approx(0.905)
    assert [p["label"] for p in ours["per_prompt"]] == [0, 1]
    assert reference["psnr"] == 100.0  # no per-prompt results: kept
    assert res["rows"][0]["psnr"] == -1.0  # the input is not changed
    only_last = select_prompts(res, [2])["rows"][1]
    assert (only_last["compute_fraction"], only_last["psnr"]) == (0.5, 60.0)


def test_a_bad_prompt_subset_is_a_clear_error():
    res = {"rows": [with_prompts("uniform", [(0.5, 30.0), (0.5, 34.0)])]}
    with pytest.raises(ValueError, match="prompt 2 asked for, but m uniform"):
        select_prompts(res, [0, 2])
    for spec in ("a-b", "3-1", "1-"):
        with pytest.raises(ValueError, match="bad prompt range"):
            parse_indices(spec)


def test_later_files_replace_the_same_rows_of_earlier_ones(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps({"meta": {"run": 1}, "rows": [
        row("uniform", 0.5, 30.0), row("precisecache", 0.6, 40.0, mode="compiled", setting=1.0),
        row("precisecache", 0.4, 35.0, mode="compiled", setting=1.5)]}))
    second.write_text(json.dumps({"meta": {"run": 2}, "rows": [
        row("precisecache", 0.62, 44.0, mode="compiled", setting=1.0),
        row("precisecache", 0.6, 41.0, mode="compiled", setting=1.0)
        | {"scheduler": "unipc"}]}))
    res = load([str(first), str(second)])
    assert res["meta"] == {"run": 1}
    assert [(r["method"], r["scheduler"], r["setting"], r["psnr"]) for r in res["rows"]] == [
        ("uniform", "euler", 0, 30.0), ("precisecache", "euler", 1.0, 44.0),
        ("precisecache", "euler", 1.5, 35.0), ("precisecache", "unipc", 1.0, 41.0)]


def test_rows_of_another_guidance_or_shift_are_another_setting(tmp_path):
    old = tmp_path / "old.json"  # written before rows recorded their guidance and shift
    old.write_text(json.dumps({"meta": {"guidance": 5.0}, "rows": [row("uniform", 0.5, 30.0)]}))
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"meta": {}, "rows": [
        row("uniform", 0.5, 31.0) | {"guidance": 5.0, "shift": 3.0},  # replaces the old row
        row("uniform", 0.5, 20.0) | {"guidance": 10.0, "shift": 6.0}]}))
    res = load([str(old), str(new)])
    for r in res["rows"]:
        r.update(setting_name="fraction", wall_s=1.0, counted_by="block part hooks")
    assert [(r["psnr"], r["guidance"], r["shift"]) for r in res["rows"]] == [
        (31.0, 5.0, 3.0), (20.0, 10.0, 6.0)]
    text = tables(res)
    assert "#### m, euler, 30 steps\n" in text
    assert "#### m, euler, 30 steps, guidance 10, shift 6\n" in text


def uniform_forms():
    """Uniform skipping with each reuse form and one other peer, at 0.4 and 0.7 compute."""
    pts = [("uniform", 0.4, 30.0), ("uniform", 0.7, 36.0),
           ("uniform+linear", 0.4, 34.0), ("uniform+linear", 0.7, 46.0),
           ("uniform+quadratic", 0.4, 33.0), ("uniform+quadratic", 0.7, 49.0),
           ("seacache", 0.45, 38.0), ("seacache", 0.65, 44.0)]
    return [row(m, c, p, setting=c) for m, c, p in pts] + [row("none", 1.0, 100.0, setting=None)]


def preset(method, compute, psnr, computes):
    per = [{"compute_fraction": c, "psnr": psnr, "ssim": 0.99} for c in computes]
    return row(method, compute, psnr, mode="compiled", setting=1.0) | {"per_prompt": per}


def test_presets_at_their_budgets_against_every_uniform_form_and_peer():
    rows = uniform_forms() + [
        preset("precisecache-turbo", 0.5, 40.0, [0.48, 0.52]),  # budget 0.465
        preset("precisecache-base", 0.64, 43.0, [0.63, 0.65]),  # budget 0.63
        row("precisecache", 0.4, 35.0, mode="compiled", setting=1.0),  # flash, older name
        row("precisecache", 0.45, 50.0, mode="compiled", setting=0.5)]  # not the preset
    found = {v["preset"]: v for v in preset_rows({"rows": rows})}
    assert set(found) == {"base", "turbo", "flash"}
    turbo = found["turbo"]
    assert turbo["budget"] == 0.465 and turbo["compute"] == 0.5
    assert turbo["max_budget_miss"] == pytest.approx(0.055)  # 0.52 against 0.465
    assert not turbo["on_budget"] and found["base"]["on_budget"]  # base misses by 0.02
    assert turbo["forms"]["uniform"] == pytest.approx((32.0, False))
    assert turbo["forms"]["uniform+linear"] == pytest.approx((38.0, False))
    assert turbo["forms"]["uniform+quadratic"] == pytest.approx((38.333333, False))
    assert turbo["peers"] == pytest.approx({"seacache": 39.5})  # the uniform forms are apart
    assert turbo["margin_linear"] == pytest.approx(2.0)
    assert turbo["margin_peer"] == pytest.approx(0.5)
    assert turbo["meets_bar"]
    base = found["base"]  # at 0.64: uniform+linear 43.6 and seacache 43.7 are ahead of 43.0
    assert base["margin_linear"] == pytest.approx(-0.6)
    assert base["margin_peer"] == pytest.approx(-0.7) and not base["meets_bar"]
    flash = found["flash"]
    assert flash["method"] == "precisecache" and flash["psnr"] == 35.0
    assert flash["peers"] == {} and flash["margin_peer"] is None  # seacache starts at 0.45
    assert flash["meets_bar"]  # 35.0 against 30, 34, 33 and no cheaper peer row
    text = presets({"rows": rows})
    assert "| m, euler, 30 steps | turbo | 0.465 | 0.500 | 0.055, no | 40.0 |" in text
    assert "| seacache 39.5 | +2.0 | +0.5 | yes |" in text


def test_a_cheaper_uniform_row_ahead_of_a_preset_is_a_loss():
    rows = uniform_forms() + [row("uniform+linear", 0.3, 60.0),
                              preset("precisecache-turbo", 0.5, 40.0, [0.5])]
    (turbo,) = preset_rows({"rows": rows})
    assert not turbo["meets_bar"]


def test_baselines_at_the_budgets():
    lines = baselines({"rows": uniform_forms()}).splitlines()[2:]
    assert len(lines) == 3
    base, turbo, flash = (line.split(" | ") for line in lines)
    assert base[1:5] == ["0.630", "34.6", "43.2", "45.3"]
    assert turbo[1:6] == ["0.465", "31.3", "36.6", "36.5", "seacache: 38.5 |"]
    assert flash[1:6] == ["0.380", "30.0 (held)", "34.0 (held)", "33.0 (held)", "- |"]


def test_leave_one_model_out(capsys, tmp_path):
    rows = []
    for model in ("wan-tiny", "cogvideox-tiny", "cogvideox-deep"):
        rows += [r | {"model": model} for r in uniform_forms()]
        rows.append(preset("precisecache-turbo", 0.5, 40.0, [0.5]) | {"model": model})
    design, held = split_models({"rows": rows}, ["cogvideox-deep"])
    assert {r["model"] for r in design["rows"]} == {"wan-tiny", "cogvideox-tiny"}
    assert {r["model"] for r in held["rows"]} == {"cogvideox-deep"}
    design, _ = split_models({"rows": rows}, ["cogvideox-deep"], design=["wan-tiny"])
    assert {r["model"] for r in design["rows"]} == {"wan-tiny"}
    with pytest.raises(ValueError, match="both held out and used"):
        split_models({"rows": rows}, ["wan-tiny"], design=["wan-tiny"])
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"meta": {}, "rows": rows}))
    report_main([str(path), "--held-out", "cogvideox-deep", "--presets", "--no-tables"])
    out = capsys.readouterr().out
    first, second = out.split("## Held out (no part in the choices): cogvideox-deep\n")
    assert first.startswith("## Design models (informed the choices): cogvideox-tiny, wan-tiny")
    assert "cogvideox-deep" not in first and "wan-tiny" not in second
    assert "Presets meeting the bar: 2 of 2." in first
    assert "Presets meeting the bar: 1 of 1." in second
    assert "Meets the bar: 1 of 1 rows." in second


def test_plot_writes_one_pareto_figure_per_model(tmp_path, capsys):
    results = tmp_path / "r.json"
    rows = [row("uniform", 0.5, 30.0), row("precisecache", 0.6, 40.0, mode="compiled"),
            row("uniform", 0.5, 31.0) | {"model": "n"}]
    results.write_text(json.dumps({"meta": {}, "rows": rows}))
    report_main([str(results), "--no-tables", "--plot", str(tmp_path / "plots")])
    written = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert written == ["pareto-m.png", "pareto-n.png"]
    assert all((tmp_path / "plots" / name).stat().st_size > 1000 for name in written)
    assert "wrote" in capsys.readouterr().out
