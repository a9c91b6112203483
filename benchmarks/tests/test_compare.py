"""The preset comparison driver: what it runs, where it writes, and that it resumes."""

import json

from benchmarks import compare
from benchmarks.methods import REGISTRY


def test_the_plan_covers_every_model_scheduler_and_step_count(tmp_path):
    args = compare.parse_args(["--models", "wan-tiny,cogvideox-deep", "--steps", "20,30,50",
                               "--out", str(tmp_path)])
    plan = compare.plan(args)
    assert len(plan) == 2 * 3 * 3
    assert {s for _, s, _, _ in plan} == {"euler", "unipc", "dpm"}
    model, sched, steps, path = plan[0]
    assert path == tmp_path / "default" / f"{model}-{sched}-{steps}" / "results.json"
    argv = compare.bench_argv(args, model, sched, steps, path)
    methods = argv[argv.index("--methods") + 1].split(",")
    assert methods == ["uniform", "uniform+linear", "uniform+quadratic", "seacache",
                       "taylorseer", "precisecache-base", "precisecache-turbo",
                       "precisecache-flash"]
    assert all(m in REGISTRY for m in methods)
    assert argv[argv.index("--prompts") + 1] == "8"
    hard = compare.parse_args(["--setting", "hard", "--models", "wan-tiny",
                               "--schedulers", "euler"])
    assert [n for _, _, n, _ in compare.plan(hard)] == compare.run.SETTINGS["hard"]["steps"]


def test_a_run_writes_one_file_per_setting_resumes_and_reports(tmp_path, capsys):
    argv = ["--models", "cogvideox-tiny", "--schedulers", "dpm", "--steps", "4", "--prompts",
            "1", "--peers", "", "--presets", "", "--out", str(tmp_path)]
    compare.main(argv)
    path = tmp_path / "default" / "cogvideox-tiny-dpm-4" / "results.json"
    res = json.loads(path.read_text())
    assert {r["method"] for r in res["rows"]} == {"none", "uniform", "uniform+linear",
                                                  "uniform+quadratic"}
    assert res["meta"]["command"].startswith("python -m benchmarks --models cogvideox-tiny")
    out = capsys.readouterr().out
    assert "The baselines at the presets' budgets" in out
    assert "| cogvideox-tiny, dpm, 4 steps | 0.465 |" in out
    before = path.stat().st_mtime_ns
    compare.main(argv)  # the file is there: nothing reruns
    assert path.stat().st_mtime_ns == before
    assert "python -m benchmarks --models" not in capsys.readouterr().out
