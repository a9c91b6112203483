"""The candidate comparison: what it accepts, what it runs and what it writes."""

import json
import math

import pytest

from benchmarks import candidates


@pytest.mark.parametrize("text, message", [
    ("probe", "NAME=JSON"),
    ('probe={"step_rule": ', "not JSON"),
    ("probe=[1]", "JSON object"),
    ('probe={"compute_budget": 0.4}', "--budgets"),
    ('probe={"step_rule": "lfcache", "alhpa": 1.0}', "unknown precisecache option"),
])
def test_a_bad_candidate_is_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        candidates.parse_candidate(text)


def test_it_runs_uniform_linear_and_each_candidate_at_each_budget(tmp_path, capsys):
    out = tmp_path / "rows.json"
    candidates.main(["--models", "cogvideox-tiny", "--steps", "10", "--prompts", "1",
                     "--budgets", "0.5", "--candidate",
                     'blind={"step_rule": "none", "budget_placement": "even"}',
                     "--out", str(out)])
    printed = capsys.readouterr().out.splitlines()
    record = json.loads(out.read_text())
    rows = record["rows"]
    assert [r["method"] for r in rows] == ["uniform+linear", "blind"]
    assert len(printed) == 2 and "blind" in printed[1]
    uniform, blind = rows
    assert uniform["compute"] == [0.5]
    assert abs(blind["compute"][0] - 0.5) <= 0.02 + 1e-9
    pattern = blind["patterns"][0]
    # Ten steps, five computed (the first and the last among them), the others extrapolated.
    assert len(pattern) == 10 and pattern[0] == pattern[-1] == "#"
    assert pattern.count("#") == 5 and set(pattern) == {"#", "e"}
    assert all(math.isfinite(p) and p > 10 for p in blind["psnr"] + uniform["psnr"])
    assert record["command"].startswith("python -m benchmarks.candidates --models")
