"""``benchmarks/host_reads.py`` measures per step and per guidance branch (values not asserted:
the runtime's reads are being changed; the table is the measurement)."""

from __future__ import annotations

from benchmarks.host_reads import configurations, measure, table


def test_measure_splits_the_reads_by_step_and_branch():
    row = measure("flash", {"preset": "flash"}, steps=4, piece_compiler="eager")
    assert len(row["per_step"]) == 4 and sum(row["per_step"]) == row["reads"]
    # Every read happens inside one of the two denoiser calls of a step.
    assert row["cond_per_step"] + row["uncond_per_step"] == row["reads_per_step"]
    assert 1 <= row["computed_steps"] <= 4
    assert sum(row["kinds"].values()) == row["reads"]
    assert all(" at " in site for site in row["sites"])
    assert "| flash |" in table([row])


def test_every_preset_and_rule_combination_is_listed():
    labels = [label for label, _ in configurations()]
    for preset in ("off", "base", "turbo", "flash", "sencache", "bwcache"):
        assert preset in labels
    assert {"lfcache+blockcache", "sencache+bwcache", "none+bwcache"} <= set(labels)
