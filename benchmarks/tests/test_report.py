"""The report's comparison of the project's rows against uniform skipping and the peers."""

import json

import pytest

from benchmarks.report import interpolate, load, parse_indices, select_prompts, versus


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
