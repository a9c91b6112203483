"""The report's comparison of the project's rows against uniform skipping and the peers."""

from pc_compile.bench.report import interpolate, versus


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
