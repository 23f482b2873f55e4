"""Sweep figures and tables, read back: curves, bootstrap bands, CSV, Markdown, heatmaps."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import another_writer
from torch.utils.tensorboard import SummaryWriter

from runners import plots
from runners.base.errors import UsageError


def make_sweep(root: Path, seeds: int = 3) -> dict:
    """2 envs x 2 variants x ``seeds`` seeds; returns curve = offset + slope * step per run."""
    truth = {}
    for env_index, env in enumerate(("Hopper-v5", "Walker2d-v5")):
        for variant_index, variant in enumerate(("adam", "adam_wc")):
            for seed in range(seeds):
                run = root / env / variant / f"seed_{seed}"
                run.mkdir(parents=True)
                (run / "config.json").write_text(json.dumps({"env_id": env, "seed": seed}))
                (run / "status.json").write_text(json.dumps({"state": "complete", "global_step": 1000}))
                offset, slope = 10 * env_index + seed, 1 + variant_index
                with SummaryWriter(str(run)) as writer:
                    for step in range(0, 1001, 100):
                        writer.add_scalar("charts/episodic_return", offset + slope * step / 100, step)
                truth[(env, variant, seed)] = (offset, slope)
    return truth


def test_aggregate_averages_seeds_on_a_common_grid_with_a_band_around_the_mean(tmp_path):
    truth = make_sweep(tmp_path)
    curves = plots.aggregate(plots.find_runs(tmp_path), "charts/episodic_return")
    assert len(curves) == 4 and all(c.seeds == 3 for c in curves)
    for curve in curves:
        expected = np.mean(
            [
                offset + slope * curve.steps / 100
                for (env, variant, _), (offset, slope) in truth.items()
                if env == curve.env and variant == curve.variant
            ],
            axis=0,
        )
        np.testing.assert_allclose(curve.mean, expected, rtol=1e-6)
        assert np.all(curve.low <= curve.mean + 1e-9) and np.all(curve.mean <= curve.high + 1e-9)
        assert np.all(curve.high - curve.low > 0)  # seeds differ, so the band has width


@pytest.mark.parametrize("reps", [plots.BOOTSTRAP_REPS, 50])  # the default and --bootstrap-reps 50
def test_bootstrap_interval_matches_an_explicit_resampling_loop(reps):
    samples = np.random.default_rng(1).normal(size=(5, 3))
    low, high = plots.bootstrap_interval(samples, np.random.default_rng(7), reps=reps)
    picks = np.random.default_rng(7).integers(0, 5, size=(reps, 5))
    for column in range(3):
        means = sorted(sum(samples[i, column] for i in pick) / 5 for pick in picks)
        assert low[column] == pytest.approx(np.quantile(means, 0.025))
        assert high[column] == pytest.approx(np.quantile(means, 0.975))


def test_legends_count_seeds_in_the_singular_for_one_run():
    assert plots.seeds_label(1) == "1 seed"
    assert plots.seeds_label(3) == "3 seeds"


def test_plot_command_writes_png_and_csv_that_read_back(tmp_path, clipzoo):
    make_sweep(tmp_path / "sweep")
    out = tmp_path / "returns.png"
    code, _, err = clipzoo("plot", str(tmp_path / "sweep"), "--metric", "charts/episodic_return", "--out", str(out))
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader(io.StringIO(out.with_suffix(".csv").read_text())))
    assert {(r["env"], r["variant"]) for r in rows} == {
        (e, v) for e in ("Hopper-v5", "Walker2d-v5") for v in ("adam", "adam_wc")
    }
    assert len(rows) == 4 * plots.GRID_POINTS
    assert all(float(r["ci_low"]) <= float(r["mean"]) <= float(r["ci_high"]) for r in rows)
    code, _, _ = clipzoo(
        "plot",
        str(tmp_path / "sweep"),
        "--metric",
        "charts/episodic_return",
        "--group-by",
        "env",
        "--out",
        str(tmp_path / "by_env.png"),
    )
    assert code == 0 and (tmp_path / "by_env.png").stat().st_size > 1000


@pytest.mark.slow
def test_several_metrics_share_one_figure_a_row_each_and_one_csv(tmp_path, clipzoo):
    truth = make_sweep(tmp_path / "sweep")
    for (env, variant, seed), (offset, slope) in truth.items():  # a second metric: the return doubled
        with SummaryWriter(str(tmp_path / "sweep" / env / variant / f"seed_{seed}")) as writer:
            for step in range(0, 1001, 100):
                writer.add_scalar("diagnostics/weight_norm", 2 * (offset + slope * step / 100), step)
    one, two = tmp_path / "one.png", tmp_path / "two.png"
    # 200 draws: the profiles' bands, rliable's bootstrap, would take most of this test at the default 2,000
    reps = ["--bootstrap-reps", "200"]
    code, _, err = clipzoo(
        "plot", str(tmp_path / "sweep"), "--metric", "charts/episodic_return", "--out", str(one), *reps
    )
    assert code == 0, err
    code, _, err = clipzoo(
        "plot",
        str(tmp_path / "sweep"),
        "--metric",
        "charts/episodic_return",
        "--metric",
        "diagnostics/weight_norm",
        "--out",
        str(two),
        "--profile",
        *reps,
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(two.with_suffix(".csv").read_text())))
    by_metric = {
        m: [r for r in rows if r["metric"] == m] for m in ("charts/episodic_return", "diagnostics/weight_norm")
    }
    assert all(len(r) == 4 * plots.GRID_POINTS for r in by_metric.values())
    assert by_metric["charts/episodic_return"] == list(csv.DictReader(io.StringIO(one.with_suffix(".csv").read_text())))
    for ret, norm in zip(*by_metric.values()):
        assert float(norm["mean"]) == pytest.approx(2 * float(ret["mean"]), rel=1e-5)
    png_height = lambda path: int.from_bytes(path.read_bytes()[20:24], "big")  # IHDR
    assert png_height(two) == pytest.approx(2 * png_height(one), rel=0.05)
    for slug in ("charts_episodic_return", "diagnostics_weight_norm"):
        assert (tmp_path / f"two_{slug}_profile.png").stat().st_size > 1000
    code, out, err = clipzoo(
        "table",
        str(tmp_path / "sweep"),
        "--metric",
        "charts/episodic_return",
        "--metric",
        "diagnostics/weight_norm",
        "--metric",
        "charts/episodic_return",
    )  # named twice, shown once
    assert code == 0, err
    assert out.count("| env | variant |") == 2 and "final diagnostics/weight_norm (mean)" in out


def test_table_reports_final_means_with_intervals_and_seed_counts(tmp_path):
    truth = make_sweep(tmp_path)
    table = plots.final_table(plots.find_runs(tmp_path), "charts/episodic_return", last_fraction=0.1)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 4
    hopper_wc = next(line for line in lines if "Hopper-v5 | adam_wc" in line)
    cells = [c.strip() for c in hopper_wc.strip("|").split("|")]
    # the budget is the last logged step, 1000: its last 10% holds the point at 1000, offset + slope * 10
    expected = np.mean(
        [
            offset + slope * 10
            for (env, variant, _), (offset, slope) in truth.items()
            if (env, variant) == ("Hopper-v5", "adam_wc")
        ]
    )
    assert float(cells[2]) == pytest.approx(expected, rel=1e-3)
    low, high = (float(v) for v in cells[3].strip("[]").split(","))
    assert low <= float(cells[2]) <= high and cells[6] == "3"
    assert cells[4] == "-" and cells[5] == "(needs 5 seeds)"


def test_table_adds_the_interquartile_mean_from_five_seeds(tmp_path):
    truth = make_sweep(tmp_path, seeds=6)
    table = plots.final_table(plots.find_runs(tmp_path), "charts/episodic_return", last_fraction=0.1)
    walker = next(line for line in table.splitlines() if "Walker2d-v5 | adam |" in line)
    cells = [c.strip() for c in walker.strip("|").split("|")]
    finals = sorted(
        offset + slope * 10
        for (env, variant, _), (offset, slope) in truth.items()
        if (env, variant) == ("Walker2d-v5", "adam")
    )
    assert float(cells[4]) == pytest.approx(np.mean(finals[1:5]), rel=1e-3)  # 6 runs: the lowest and highest dropped
    low, high = (float(v) for v in cells[5].strip("[]").split(","))
    assert low <= float(cells[4]) <= high and cells[6] == "6"


def test_window_table_gives_each_windows_mean_over_seeds_and_each_seeds_whole_run_mean(tmp_path, clipzoo):
    make_sweep(tmp_path)  # no total_timesteps in the configs: the budget is the last logged step, 1000
    code, out, err = clipzoo("table", str(tmp_path), "--metric", "charts/episodic_return", "--windows", "2")
    assert code == 0, err
    assert "per window (0-500, 500-1k)" in out
    # Hopper adam_wc: offset = seed (0, 1, 2), slope 2; steps 0-500 hold values offset + 2 x (0..5),
    # mean offset + 5; steps 600-1000 offset + 2 x (6..10), mean offset + 16; whole run offset + 10.5
    assert "| Hopper-v5 | adam_wc | 6, 17 | 10.5, 11.5, 12.5 | 0, 0, 0 | 3 (seed_0, seed_1, seed_2) |" in out


def write_run(
    root: Path,
    env: str,
    variant: str,
    seed: str,
    points: list[tuple[int, float]],
    budget: int | None = None,
    state: str = "complete",
) -> None:
    run = root / env / variant / seed
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"env_id": env, **({"total_timesteps": budget} if budget else {})}))
    (run / "status.json").write_text(json.dumps({"state": state, "global_step": points[-1][0]}))
    with SummaryWriter(str(run)) as writer:
        for step, value in points:
            writer.add_scalar("charts/episodic_return", value, step)


def test_window_table_takes_the_budget_from_the_config_and_shows_a_collapse_as_a_drop(tmp_path):
    # rises to 30, falls to 5; the last point is at 800, not at the budget of 900
    write_run(
        tmp_path,
        "Hopper-v5",
        "adam",
        "seed_1",
        list(zip(range(100, 801, 100), (1, 2, 3, 10, 20, 30, 5, 5))),
        budget=900,
    )
    runs = plots.find_runs(tmp_path)
    table = plots.window_table(runs, "charts/episodic_return", plots.window_edges({"charts/episodic_return": runs}, 3))
    # windows (0, 300], (300, 600], (600, 900]: means 2, 20, 5; whole run 9; best minus last 15
    assert "per window (0-300, 300-600, 600-900)" in table
    assert "| Hopper-v5 | adam | 2, 20, 5 | 9 | 15 | 1 (seed_1) |" in table


def test_windows_a_seed_lacks_are_left_out_of_every_seeds_whole_run_mean_and_drop(tmp_path, clipzoo):
    points = list(zip(range(100, 1001, 100), (1, 1, 1, 1, 1, 4, 4, 4, 4, 4)))
    write_run(tmp_path, "Hopper-v5", "adam", "seed_1", points, budget=1000)
    write_run(
        tmp_path, "Hopper-v5", "adam", "seed_2", [(s, v + 1) for s, v in points[:4]], budget=1000, state="interrupted"
    )
    code, out, err = clipzoo(
        "table", str(tmp_path), "--metric", "charts/episodic_return", "--windows", "4", "--include-partial"
    )
    assert code == 0, err
    # cut at the common last step, 400: windows (0, 250] and (250, 500] have points from both
    # seeds (seed 1: 1 and 1; seed 2: 2 and 2); the last two have none
    assert "| Hopper-v5 | adam | 1.5, 1.5, -, - | 1, 2 | 0, 0 | 2 (seed_1, seed_2) |" in out
    assert "Hopper-v5/adam: charts/episodic_return has points from every seed in 2 of 4 windows" in out
    # final values over the last 10% of the cut budget, steps 360-400: 1 (seed 1) and 2 (seed 2)
    assert "| Hopper-v5 | adam | 1.5 | [1, 2] |" in out
    write_run(tmp_path, "Walker2d-v5", "adam", "seed_1", [(100, 1.0), (1000, 2.0)], budget=1000)
    write_run(tmp_path, "Walker2d-v5", "adam", "seed_2", [(300, 1.0)], budget=1000, state="interrupted")
    code, _, err = clipzoo("table", str(tmp_path), "--metric", "charts/episodic_return", "--include-partial")
    assert code == 2 and err.strip().endswith(
        "seed_1 logged no point of charts/episodic_return in the last 0.1 of its group's common last step 300 "
        "(its group is cut there: --include-partial), after step 270; a larger --last-fraction averages over more of it"
    )


def test_a_complete_run_s_values_do_not_depend_on_the_other_seeds_of_its_group(tmp_path, clipzoo):
    # episodes end at irregular steps: seed 2's last one at 950, seed 1's at 1000; both runs are complete
    write_run(tmp_path, "Hopper-v5", "adam", "seed_1", list(zip(range(100, 1001, 100), range(1, 11))), budget=1000)
    alone = tmp_path / "alone.csv"
    code, _, err = clipzoo(
        "table", str(tmp_path), "--metric", "charts/episodic_return", "--windows", "2", "--csv", str(alone)
    )
    assert code == 0, err
    write_run(tmp_path, "Hopper-v5", "adam", "seed_2", list(zip(range(150, 951, 200), (1, 1, 1, 1, 1))), budget=1000)
    both = tmp_path / "both.csv"
    code, _, err = clipzoo(
        "table", str(tmp_path), "--metric", "charts/episodic_return", "--windows", "2", "--csv", str(both)
    )
    assert code == 0, err
    seed_1 = lambda path: next(r for r in csv.DictReader(io.StringIO(path.read_text())) if r["seed"] == "seed_1")
    # final: the last 10% of its 10 points, the point at 1000 (10); windows (0, 500]: 1-5, (500, 1000]: 6-10
    assert (seed_1(alone)["final_last_0.1"], seed_1(alone)["window_2_of_2"]) == ("10", "8")
    assert {k: v for k, v in seed_1(both).items() if k not in ("path",)} == {
        k: v for k, v in seed_1(alone).items() if k not in ("path",)
    }


def test_the_final_value_averages_the_points_logged_in_the_last_tenth_of_the_budget(tmp_path, clipzoo):
    # seed 1 ends many short episodes late in the run, seed 2 few long ones; budget 1000
    late = [(100, 1.0), (300, 1.0), (500, 1.0), (850, 4.0), (910, 6.0), (930, 8.0), (960, 10.0), (990, 12.0)]
    write_run(tmp_path, "Hopper-v5", "adam", "seed_1", late, budget=1000)
    write_run(tmp_path, "Hopper-v5", "adam", "seed_2", [(400, 2.0), (899, 3.0), (1002, 5.0)], budget=1000)
    out_csv = tmp_path / "runs.csv"
    code, out, err = clipzoo(
        "table", str(tmp_path), "--metric", "charts/episodic_return", "--windows", "10", "--csv", str(out_csv)
    )
    assert code == 0, err
    rows = {r["seed"]: r for r in csv.DictReader(io.StringIO(out_csv.read_text()))}
    # seed 1: steps after 900 are 910-990, (6 + 8 + 10 + 12) / 4 = 9 (its last 10% of points would be 990 alone:
    # 12); seed 2: 1002, past the budget, counts (its last point by count too), 899 does not: 5
    assert (rows["seed_1"]["final_last_0.1"], rows["seed_2"]["final_last_0.1"]) == ("9", "5")
    assert all(r["final_last_0.1"] == r["window_10_of_10"] for r in rows.values())  # the last of 10 windows
    assert "| Hopper-v5 | adam | 7 | [" in out  # the mean over seeds
    code, out, err = clipzoo("table", str(tmp_path), "--metric", "charts/episodic_return", "--last-fraction", "0.5")
    assert code == 0, err
    assert (
        "| Hopper-v5 | adam | 6 | [" in out
    )  # steps after 500: 40 / 5 = 8 for seed 1 (850-990), 4 for seed 2 (899, 1002)
    code, out, err = clipzoo("table", str(tmp_path), "--metric", "charts/episodic_return", "--last-fraction", "1")
    assert code == 0, err
    assert "| Hopper-v5 | adam | 4.354 | [" in out  # every point: (43 / 8 + 10 / 3) / 2
    write_run(tmp_path, "Hopper-v5", "adam", "seed_3", [(100, 1.0), (800, 2.0)], budget=1000)
    code, _, err = clipzoo("table", str(tmp_path), "--metric", "charts/episodic_return")
    assert code == 2 and err.strip().endswith(
        "seed_3 logged no point of charts/episodic_return in the last 0.1 of its budget, after step 900; "
        "a larger --last-fraction averages over more of it"
    )


def test_a_runs_final_value_covers_the_last_share_of_its_own_budget(tmp_path, clipzoo):
    # one env, two budgets (a variant may set its own total_timesteps): 500 and 1000 env steps
    write_run(tmp_path, "Hopper-v5", "short", "seed_1", list(zip(range(50, 501, 50), range(1, 11))), budget=500)
    write_run(tmp_path, "Hopper-v5", "long", "seed_1", list(zip(range(100, 1001, 100), range(1, 11))), budget=1000)
    # 0.7 x 700,000 is 489,999.99999999994 in floats: the point at 490,000 is at the window's start, so out
    points = [(100_000, 0.0), (490_000, 100.0), (600_000, 1.0), (700_000, 3.0)]
    write_run(tmp_path, "Walker2d-v5", "adam", "seed_1", points, budget=700_000)
    code, out, err = clipzoo("table", str(tmp_path), "--metric", "charts/episodic_return", "--last-fraction", "0.3")
    assert code == 0, err
    # short: steps after 350 (400, 450, 500: 8, 9, 10); long: after 700 (800, 900, 1000: 8, 9, 10)
    assert "| Hopper-v5 | short | 9 |" in out and "| Hopper-v5 | long | 9 |" in out
    assert "| Walker2d-v5 | adam | 2 |" in out  # (1 + 3) / 2


def test_each_env_has_its_own_budget_and_the_csv_uses_the_tables_windows(tmp_path, clipzoo):
    write_run(
        tmp_path, "Hopper-v5", "adam", "seed_1", [(100, 1.0), (600, 3.0), (1200, 5.0)], budget=1000
    )  # 1200: past the budget
    write_run(tmp_path, "Walker2d-v5", "adam", "seed_1", [(1000, 2.0), (2000, 6.0), (3000, 8.0)], budget=3000)
    out_csv = tmp_path / "runs.csv"
    code, out, err = clipzoo(
        "table", str(tmp_path), "--metric", "charts/episodic_return", "--windows", "2", "--csv", str(out_csv)
    )
    assert code == 0, err
    assert "per window (2 equal windows of each env's budget)" in out
    assert "| Hopper-v5 | adam | 1, 4 | 2.5 | 0 | 1 (seed_1) |" in out  # 600 and 1200 share the window (500, 1000]
    assert "| Walker2d-v5 | adam | 2, 7 | 4.5 | 0 | 1 (seed_1) |" in out
    rows = {r["env"]: r for r in csv.DictReader(io.StringIO(out_csv.read_text()))}
    assert (rows["Hopper-v5"]["budget"], rows["Hopper-v5"]["window_1_of_2"], rows["Hopper-v5"]["window_2_of_2"]) == (
        "1000",
        "1",
        "4",
    )
    assert (
        rows["Walker2d-v5"]["budget"],
        rows["Walker2d-v5"]["window_1_of_2"],
        rows["Walker2d-v5"]["window_2_of_2"],
    ) == ("3000", "2", "7")
    code, _, err = clipzoo("table", str(tmp_path), "--metric", "charts/episodic_return", "--windows", "2000")
    assert code == 2 and "--windows 2000 asks for more windows than Hopper-v5's budget of 1,000 env steps" in err


def test_table_csv_holds_each_runs_final_value_and_window_means(tmp_path, clipzoo):
    truth = make_sweep(tmp_path / "sweep")
    out = tmp_path / "runs.csv"
    code, printed, err = clipzoo(
        "table", str(tmp_path / "sweep"), "--metric", "charts/episodic_return", "--windows", "2", "--csv", str(out)
    )
    assert code == 0, err
    assert f"wrote {out}" in printed
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == len(truth) and list(rows[0]) == [
        "metric",
        "env",
        "variant",
        "seed",
        "final_last_0.1",
        "budget",
        "window_1_of_2",
        "window_2_of_2",
        "commit",
        "clean_tree",
        "resumes",
        "resumed_exactly",
    ]
    for row in rows:
        offset, slope = truth[(row["env"], row["variant"], int(row["seed"].removeprefix("seed_")))]
        assert float(row["final_last_0.1"]) == pytest.approx(offset + 10 * slope)  # steps after 900: 1000
        assert row["budget"] == "1000"
        assert float(row["window_1_of_2"]) == pytest.approx(offset + 2.5 * slope)  # steps 0-500
        assert float(row["window_2_of_2"]) == pytest.approx(offset + 8 * slope)  # steps 600-1000
    code, _, err = clipzoo("table", str(tmp_path / "sweep"), "--metric", "charts/episodic_return", "--csv", str(out))
    assert code == 0, err
    assert list(csv.DictReader(io.StringIO(out.read_text())))[0].keys() == {
        "metric",
        "env",
        "variant",
        "seed",
        "final_last_0.1",
        "commit",
        "clean_tree",
        "resumes",
        "resumed_exactly",
    }
    code, _, err = clipzoo("table", str(tmp_path / "sweep"), "--metric", "charts/episodic_return", "--windows", "0")
    assert code == 2 and "--windows must be a positive number of windows, got 0" in err


def test_the_run_csv_names_each_runs_commit_and_its_resumes(tmp_path):
    from runners.plots import provenance

    (tmp_path / "attempts.json").write_text(
        json.dumps(
            [
                {"commit": "a" * 40, "clean": True, "resumed_from_step": None},
                {"commit": "a" * 40, "clean": True, "resumed_from_step": 3000, "exact": True},
                {"commit": "b" * 40, "clean": False, "resumed_from_step": 6000, "exact": False},
            ]
        )
    )
    assert provenance(tmp_path) == ["a" * 12 + "+" + "b" * 12, "false", "2", "false"]
    assert provenance(tmp_path / "absent") == ["", "", "", ""]


def test_plot_profile_draws_the_fraction_of_runs_above_each_threshold(tmp_path, clipzoo):
    truth = make_sweep(tmp_path / "sweep")
    finals = plots.final_scores(plots.find_runs(tmp_path / "sweep"), "charts/episodic_return")
    expected = sorted(
        offset + slope * 10
        for (env, variant, _), (offset, slope) in truth.items()
        if (env, variant) == ("Hopper-v5", "adam")
    )
    assert sorted(finals[("Hopper-v5", "adam")]) == pytest.approx(expected)
    profile = ["plot", str(tmp_path / "sweep"), "--metric", "charts/episodic_return", "--profile"]
    code, _, err = clipzoo(*profile, "--bootstrap-reps", "200")
    assert code == 0, err
    assert (tmp_path / "sweep" / "charts_episodic_return_profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = clipzoo(*profile, "--bootstrap-reps", "0")
    assert code == 2 and err.strip() == "error: --bootstrap-reps must be at least 1, got 0", err


def test_a_missing_tag_is_refused_with_the_tags_that_exist(tmp_path, clipzoo):
    make_sweep(tmp_path)
    with pytest.raises(UsageError, match="has no scalar 'charts/episodic_retrun'; it has: charts/episodic_return"):
        plots.aggregate(plots.find_runs(tmp_path), "charts/episodic_retrun")
    code, _, err = clipzoo("table", str(tmp_path), "--metric", "nope")
    assert code == 2 and "it has: charts/episodic_return" in err


def test_heatmaps_side_by_side_pick_the_nearest_saved_step(tmp_path):
    runs = []
    for name in ("adam", "adam_wc"):
        run = tmp_path / name / "seed_1"
        (run / "gradcov").mkdir(parents=True)
        for step in (1000, 5000):
            matrix = np.eye(4) * (1 if step == 1000 else -1)
            np.savez(run / "gradcov" / f"step_{step:010d}.npz", covariance=matrix, order=np.arange(4), step=step)
        runs.append(run)
    assert plots.load_covariance(runs[0], 4200)[0] == 5000
    assert plots.load_covariance(runs[0], None)[0] == 5000
    assert plots.load_covariance(runs[0], 1500)[0] == 1000
    out = plots.heatmaps_side_by_side(runs, 1500, tmp_path / "side.png")
    assert out.stat().st_size > 1000
    with pytest.raises(UsageError, match="no saved gradient covariance"):
        plots.load_covariance(tmp_path, None)


def test_a_variant_that_does_not_log_the_metric_is_left_out_with_a_note(tmp_path, clipzoo):
    make_sweep(tmp_path)
    for seed in range(3):  # only adam_wc logs the clipping plug-in's metric, as in a real sweep
        with another_writer(tmp_path / "Hopper-v5" / "adam_wc" / f"seed_{seed}") as writer:
            writer.add_scalar("wc/clipped_fraction", 0.1 * (seed + 1), 1000)
    code, out, err = clipzoo("table", str(tmp_path), "--metric", "wc/clipped_fraction")
    assert code == 0, err
    assert "| Hopper-v5 | adam_wc | 0.2 |" in out and "| Hopper-v5 | adam |" not in out
    for group in ("Hopper-v5/adam", "Walker2d-v5/adam", "Walker2d-v5/adam_wc"):
        assert f"left out {group}: none of its 3 runs logs wc/clipped_fraction" in out
    code, out, err = clipzoo(
        "plot", str(tmp_path), "--metric", "wc/clipped_fraction", "--out", str(tmp_path / "wc.png")
    )
    assert code == 0 and "left out Hopper-v5/adam: none of its 3 runs logs" in out
    # a run that lacks it where its group's other runs have it is a broken run, not a baseline
    with another_writer(tmp_path / "Hopper-v5" / "adam" / "seed_0") as writer:
        writer.add_scalar("wc/clipped_fraction", 0.5, 1000)
    code, _, err = clipzoo("table", str(tmp_path), "--metric", "wc/clipped_fraction")
    assert code == 2 and f"run {tmp_path / 'Hopper-v5' / 'adam' / 'seed_1'} has no scalar 'wc/clipped_fraction'" in err


def test_a_covariance_summary_the_events_lack_is_recomputed_from_the_saved_matrices(tmp_path, clipzoo):
    make_sweep(tmp_path)
    # two blocks of +0.5 and one cross block of -0.5 (4 x 4): signed off-diagonal mean
    # (4 x 0.5 - 8 x 0.5) / 12 = -1/6, absolute mean 0.5 at step 500; all entries +-0.25 at 1000
    blocks = np.array(
        [[1, 0.5, -0.5, -0.5], [0.5, 1, -0.5, -0.5], [-0.5, -0.5, 1, 0.5], [-0.5, -0.5, 0.5, 1]], dtype=np.float32
    )
    for run in (tmp_path / "Hopper-v5").glob("*/seed_*"):
        (run / "gradcov").mkdir()
        for step, matrix in ((500, blocks), (1000, np.where(np.eye(4) > 0, 1, np.sign(blocks) / 4).astype(np.float32))):
            np.savez(run / "gradcov" / f"step_{step:010d}.npz", covariance=matrix, order=np.arange(4), step=step)
    steps, values = plots.read_scalar(tmp_path / "Hopper-v5" / "adam" / "seed_0", "gradcov/mean_abs_offdiag")
    assert steps.tolist() == [500, 1000] and values == pytest.approx([0.5, 0.25])
    assert plots.read_scalar(tmp_path / "Hopper-v5" / "adam" / "seed_0", "gradcov/mean_offdiag")[1] == pytest.approx(
        [-1 / 6, -1 / 12]
    )
    code, out, err = clipzoo("table", str(tmp_path), "--metric", "gradcov/mean_abs_offdiag", "--last-fraction", "0.5")
    assert code == 0, err
    assert "| Hopper-v5 | adam | 0.25 |" in out and "left out Walker2d-v5/adam: none of its 3 runs logs" in out
    code, _, err = clipzoo("table", str(tmp_path), "--metric", "gradcov/no_such_summary")
    assert code == 2 and "has no scalar 'gradcov/no_such_summary'" in err
    # resumed with the summary logged from step 1000 on, and a stale matrix from beyond its last step
    run = tmp_path / "Hopper-v5" / "adam" / "seed_1"
    with another_writer(run) as writer:
        writer.add_scalar("gradcov/mean_abs_offdiag", 0.25, 1000)
    np.savez(
        run / "gradcov" / f"step_{1500:010d}.npz", covariance=np.eye(4, dtype=np.float32), order=np.arange(4), step=1500
    )
    steps, values = plots.read_scalar(run, "gradcov/mean_abs_offdiag")
    assert steps.tolist() == [500, 1000] and values == pytest.approx([0.5, 0.25])


def test_tables_and_plots_name_a_run_resumed_without_its_buffer(tmp_path):
    from runners.plots import Run, select_runs

    exact, inexact = tmp_path / "seed_1", tmp_path / "seed_2"
    for run, flag in ((exact, True), (inexact, False)):
        run.mkdir()
        (run / "attempts.json").write_text(
            json.dumps([{"resumed_from_step": None}, {"resumed_from_step": 4000, "exact": flag}])
        )
    _, notes = select_runs([Run(exact, "env", "v", "seed_1"), Run(inexact, "env", "v", "seed_2")])
    assert notes == [
        f"{inexact} was resumed without its replay buffer at step 4,000 (--checkpoint-buffer never): "
        "not the run an uninterrupted one would be"
    ]
