"""rliable-based aggregates against hand-computed numbers and a slow bootstrap written here;
``table --compare``'s statistics against hand computations and slow references written here."""

import csv
import io
import itertools
import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from torch.utils.tensorboard import SummaryWriter

from runners import plots
from runners.aggregates import (
    bootstrap_difference,
    compare,
    fewest_deciding_seeds,
    holm,
    interval_estimates,
    performance_profiles,
    permutation_p_value,
    pooled_sd,
    probability_of_improvement,
    seeds_for_power,
    smallest_p,
)


def slow_percentile_bootstrap(values: np.ndarray, statistic, reps: int = 5000, seed: int = 1):
    rng = np.random.default_rng(seed)
    draws = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(reps)]
    return np.quantile(draws, 0.025), np.quantile(draws, 0.975)


def middle_half_mean(values: np.ndarray) -> float:
    ordered = np.sort(values)
    cut = int(0.25 * len(ordered))  # scipy.stats.trim_mean's rule: whole runs only
    return float(ordered[cut : len(ordered) - cut].mean())


def test_mean_and_iqm_points_match_hand_computed_values():
    scores = np.array([0.0, 0.0, 1.0, 2.0, 3.0, 100.0])[:, None]
    estimate = interval_estimates({"adam": scores})["adam"]
    assert np.isclose(estimate["mean"].point, 106 / 6)
    assert np.isclose(estimate["iqm"].point, (0 + 1 + 2 + 3) / 4)  # one run trimmed from each end


def test_iqm_is_left_out_below_five_seeds():
    estimate = interval_estimates({"wc": np.array([[1.0], [2.0], [4.0], [8.0]])})["wc"]
    assert set(estimate) == {"mean"}


def test_intervals_agree_with_a_slow_bootstrap_of_the_seeds():
    values = np.random.default_rng(0).normal(10, 3, size=8)
    estimate = interval_estimates({"v": values[:, None]}, reps=5000)["v"]
    for name, statistic in (("mean", np.mean), ("iqm", middle_half_mean)):
        low, high = slow_percentile_bootstrap(values, statistic)
        width = high - low
        assert abs(estimate[name].low - low) < 0.1 * width, name
        assert abs(estimate[name].high - high) < 0.1 * width, name
        assert estimate[name].low <= estimate[name].point <= estimate[name].high


def test_a_single_seed_has_a_zero_width_interval():
    estimate = interval_estimates({"v": np.array([[3.0]])})["v"]["mean"]
    assert (estimate.point, estimate.low, estimate.high) == (3.0, 3.0, 3.0)


def test_performance_profile_is_the_fraction_of_runs_above_each_threshold():
    scores = {"a": np.array([[1.0], [2.0], [3.0], [4.0]]), "b": np.array([[5.0], [5.0], [5.0], [5.0]])}
    profiles = performance_profiles(scores, np.array([0.0, 2.5, 4.5]))
    assert np.allclose(profiles["a"][0], [1.0, 0.5, 0.0])
    assert np.allclose(profiles["b"][0], [1.0, 1.0, 1.0])
    assert np.all(profiles["a"][1] <= profiles["a"][0]) and np.all(profiles["a"][0] <= profiles["a"][2])


def test_profiles_leave_numpys_global_generator_untouched():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    performance_profiles({"a": np.array([[1.0], [2.0]])}, np.array([1.5]))
    assert np.random.rand() == expected


def slow_permutation_p(a: list[int], b: list[int]) -> Fraction:
    """Every split of the pooled seeds into len(a) and len(b), in exact arithmetic."""
    pooled, n_a = a + b, len(a)
    observed = abs(Fraction(sum(b), len(b)) - Fraction(sum(a), n_a))
    splits = list(itertools.combinations(range(len(pooled)), n_a))
    extreme = 0
    for chosen in splits:
        group_a = [pooled[i] for i in chosen]
        group_b = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        if abs(Fraction(sum(group_b), len(group_b)) - Fraction(sum(group_a), n_a)) >= observed:
            extreme += 1
    return Fraction(extreme, len(splits))


def test_permutation_p_of_three_against_three_fully_separated_is_two_of_twenty():
    # of the C(6, 3) = 20 splits only the observed one and its mirror image are as extreme
    assert permutation_p_value([1, 2, 3], [4, 5, 6]) == (pytest.approx(0.1), 20, True)
    # in floating point the mirror split of these comes out a rounding error short of the observed
    # difference; it ties in exact arithmetic, so it counts
    assert permutation_p_value([0.8, 0.6, 0.5], [0.3, 0.3, 0.1])[0] == pytest.approx(
        float(slow_permutation_p([8, 6, 5], [3, 3, 1]))
    )
    assert permutation_p_value([4, 5, 6], [1, 2, 3])[0] == pytest.approx(0.1)  # two-sided
    assert permutation_p_value([1, 2], [1, 2])[0] == 1.0
    assert smallest_p(3, 3) == pytest.approx(0.1) and smallest_p(2, 3) == pytest.approx(0.1)  # 2/20; 1/10


def test_permutation_p_of_five_against_five_matches_a_slow_exact_loop():
    rng = np.random.default_rng(3)
    for _ in range(4):
        a, b = rng.integers(0, 6, 5).tolist(), rng.integers(2, 8, 5).tolist()  # small integers: many ties
        p, count, exact = permutation_p_value(a, b)
        assert count == 252 and exact
        assert p == pytest.approx(float(slow_permutation_p(a, b)), abs=1e-12), (a, b)
    a, b = [3, 1, 4, 1, 5, 9], [2, 6, 5, 3]  # unequal counts: C(10, 6) = 210
    assert permutation_p_value(a, b)[:2] == (pytest.approx(float(slow_permutation_p(a, b))), 210)


def test_permutation_p_beyond_the_exact_limit_is_estimated_from_seeded_random_relabelings():
    a, b = np.arange(8.0), np.arange(8.0) + 3
    exact, count, _ = permutation_p_value(a, b)
    assert count == 12870
    estimated, draws, is_exact = permutation_p_value(a, b, limit=100, random_relabelings=50_000)
    assert (draws, is_exact) == (50_000, False)
    assert estimated == pytest.approx(exact, abs=0.005)
    assert permutation_p_value(a, b, limit=100, random_relabelings=50_000) == (estimated, draws, is_exact)


def test_holm_matches_a_hand_computation():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1: 0.03, 0.06, 0.04 -> running maximum 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.4]) == pytest.approx([0.8, 0.8])  # 0.4 x 2, then 0.5 x 1 raised to the running maximum
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # 0.6 x 2 capped at 1
    adjusted = holm([0.01, np.nan, 0.04])  # an untested comparison does not count in m
    assert np.isnan(adjusted[1]) and adjusted[[0, 2]] == pytest.approx([0.02, 0.04])


def test_probability_of_improvement_counts_ties_as_half():
    # B = 2: beats 1, ties 2 -> 1.5; B = 3: beats 1, 2, ties 3 -> 2.5; B = 4: beats all -> 3; (1.5 + 2.5 + 3) / 9
    assert probability_of_improvement([1, 2, 3], [2, 3, 4]) == pytest.approx(7 / 9)
    assert probability_of_improvement([2, 3, 4], [1, 2, 3]) == pytest.approx(2 / 9)
    assert probability_of_improvement([5, 5], [5, 5]) == 0.5


def test_bootstrap_difference_resamples_each_variants_seeds_apart_and_is_reproducible():
    a, b = np.array([1.0, 2.0, 4.0, 8.0]), np.array([3.0, 5.0, 6.0, 9.0, 12.0])
    estimate = bootstrap_difference(a, b, reps=5000, seed=4)
    assert estimate.point == pytest.approx(b.mean() - a.mean())
    assert estimate.low < estimate.point < estimate.high
    assert bootstrap_difference(a, b, reps=5000, seed=4) == estimate
    assert bootstrap_difference(a, b, reps=5000, seed=5) != estimate
    rng = np.random.default_rng(4)  # the same draws, by a loop: A's resamples, then B's
    picks_a, picks_b = rng.integers(0, 4, size=(5000, 4)), rng.integers(0, 5, size=(5000, 5))
    draws = [sum(b[j] for j in pick_b) / 5 - sum(a[i] for i in pick_a) / 4 for pick_a, pick_b in zip(picks_a, picks_b)]
    assert (estimate.low, estimate.high) == pytest.approx((np.quantile(draws, 0.025), np.quantile(draws, 0.975)))
    # stratified: with A constant, B - A only moves with B's own resampled means (0, 5 or 10 here)
    constant = bootstrap_difference([1.0, 1.0, 1.0], [1.0, 11.0], reps=2000)
    assert (constant.low, constant.high) == (0.0, 10.0)


def test_compare_gathers_the_statistics_with_seed_counts():
    d = compare([1, 2, 3], [4, 5, 6])
    assert (d.point, d.p, d.relabelings, d.exact, d.improvement, d.seeds_a, d.seeds_b) == (
        3.0,
        pytest.approx(0.1),
        20,
        True,
        1.0,
        3,
        3,
    )


def test_pooled_sd_and_the_seeds_a_difference_needs_match_the_hand_computed_ones():
    # A: mean 2, squares 1 + 0 + 1; B: mean 5, squares 9 + 1 + 1 + 9; 3 + 4 - 2 = 5 degrees of freedom
    assert pooled_sd([1, 2, 3], [2, 4, 6, 8]) == pytest.approx(math.sqrt(22 / 5))
    assert math.isnan(pooled_sd([1], [2]))
    # the fewest seeds whose 2 / C(2n, n), times the tests, is below 0.05: 2/70 at 4, 2/252 at 5, 2/924 at 6, 2/3432
    assert [fewest_deciding_seeds(m) for m in (1, 2, 6, 7, 23, 24)] == [4, 5, 5, 6, 6, 7]
    # claim 4's evaluation return (4 tests): z_{1 - 0.05/8} = 2.497705, z_0.8 = 0.841621 from a normal table
    factor = 2 * (2.497705 + 0.841621) ** 2
    assert factor == pytest.approx(22.30, abs=0.01)
    assert seeds_for_power(-22.8, 167.0, 4) == math.ceil(factor * 167.0**2 / 22.8**2) == 1197
    assert seeds_for_power(-12.25, 43.2, 4) == math.ceil(factor * 43.2**2 / 12.25**2) == 278
    assert seeds_for_power(9.0, 1.0, 4) == 5  # the formula's 0.3 seeds: the floor of rule point 5
    assert seeds_for_power(0.0, 1.0, 4) == math.inf and math.isnan(seeds_for_power(1.0, float("nan"), 4))
    assert compare([1, 2, 3], [2, 4, 6, 8]).pooled_sd == pytest.approx(math.sqrt(22 / 5))


def test_a_seed_count_of_millions_keeps_every_digit_in_the_csvs_and_the_holm_table(tmp_path, clipzoo):
    # wc's seeds 1.0, 2.0, 3.003 against adam's 1, 2, 3: d = 0.001; squares about the means: A's 1 + 0 + 1,
    # B's 1.001^2 + 0.001^2 + 1.002^2 = 2.006006 (TensorBoard keeps float32, hence rel 1e-5)
    for seed, wc in enumerate([1.0, 2.0, 3.003]):
        write_constant_run(tmp_path, "Hopper-v5", "adam", seed, 1 + seed, 1 + seed)
        write_constant_run(tmp_path, "Hopper-v5", "wc", seed, wc, wc)
    code, out, err = clipzoo(
        "table", str(tmp_path), "--metric", "charts/episodic_return", "--compare", "adam", "wc",
        "--csv", str(tmp_path / "runs.csv"),
    )  # fmt: skip
    assert code == 0, err
    written = list(csv.DictReader(io.StringIO((tmp_path / "runs_compare.csv").read_text())))
    d, sd = float(written[0]["mean_b_minus_a"]), float(written[0]["pooled_sd"])
    assert d == pytest.approx(0.001, rel=1e-5) and sd == pytest.approx(math.sqrt((2 + 2.006006) / 4), rel=1e-5)
    expected = seeds_for_power(d, sd, 2)
    assert expected > 10**7 and written[0]["seeds_for_power"] == str(int(expected))
    assert f"| 3, 3 | {int(expected):,} |" in out
    code, out, err = clipzoo("holm", str(tmp_path / "runs_compare.csv"), "--csv", str(tmp_path / "pooled.csv"))
    assert code == 0, err
    pooled = list(csv.DictReader(io.StringIO((tmp_path / "pooled.csv").read_text())))
    assert pooled[0]["seeds_for_power_pooled"] == str(int(expected)) and f"| 3, 3 | {int(expected):,} |" in out


def write_constant_run(
    root: Path, env: str, variant: str, seed: int, first_half: float, second_half: float, last_step: int = 1000
) -> None:
    """Points at steps 100, 200, ..., ``last_step`` (budget 1000; interrupted before it):
    ``first_half`` up to 500, ``second_half`` after."""
    run = root / env / variant / f"seed_{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"env_id": env, "total_timesteps": 1000}))
    state = "complete" if last_step == 1000 else "interrupted"
    (run / "status.json").write_text(json.dumps({"state": state, "global_step": last_step}))
    with SummaryWriter(str(run)) as writer:
        for step in range(100, last_step + 1, 100):
            writer.add_scalar("charts/episodic_return", first_half if step <= 500 else second_half, step)


def test_table_compare_prints_b_minus_a_with_exact_p_holm_and_a_few_seeds_note(tmp_path, clipzoo):
    for seed in range(3):
        write_constant_run(tmp_path, "Hopper-v5", "adam", seed, 1 + seed, 1 + seed)  # 1, 2, 3 throughout
        write_constant_run(tmp_path, "Hopper-v5", "wc", seed, 4 + seed, 10 + seed)  # 4, 5, 6 then 10, 11, 12
        write_constant_run(tmp_path, "Walker2d-v5", "adam", seed, 1, 1)  # no wc runs on Walker2d
    out_csv = tmp_path / "out" / "runs.csv"
    code, out, err = clipzoo(
        "table", str(tmp_path), "--metric", "charts/episodic_return", "--compare", "adam", "wc", "--csv", str(out_csv)
    )
    assert code == 0, err
    # final: 10, 11, 12 against 1, 2, 3 -> 9; whole run (10 windows, a point each): 7, 8, 9 against 1, 2, 3 -> 6;
    # exact p 2/20 for each, Holm over the 2 comparisons 0.2; every wc seed beats every adam seed
    assert (
        "| env | A | B | charts/episodic_return | mean B − A | 95% CI | p | Holm p | P(B > A) | seeds A, B "
        "| seeds for 80% power |" in out
    )
    assert (
        "| Hopper-v5 | adam | wc | final | 9 | [" in out and "| Hopper-v5 | adam | wc | whole-run mean | 6 | [" in out
    )
    rows = [line for line in out.splitlines() if line.startswith("| Hopper-v5 | adam | wc |")]
    # pooled sd 1 for both: n = 2 (z_0.9875 + z_0.8)^2 / 9^2 = 0.23 and / 6^2 = 0.53, so the floor of 5 seeds
    # (at 2 tests 4 v 4 gives at best 2 x 2/70 = 0.057, 5 v 5 2 x 2/252 = 0.016)
    assert len(rows) == 2 and all(line.endswith("| 0.1 | 0.2 | 1 | 3, 3 | 5 |") for line in rows)
    assert "3 v 3 seeds, under 5 per variant" in out and "2/C(6,3) = 2/20 = 0.1" in out
    assert "Walker2d-v5: no runs of wc with charts/episodic_return; adam v wc not compared there" in out
    written = list(csv.DictReader(io.StringIO(plots.compare_csv_path(out_csv).read_text())))
    assert plots.compare_csv_path(out_csv) == tmp_path / "out" / "runs_compare.csv" and out_csv.exists()
    assert [
        (r["measure"], float(r["mean_b_minus_a"]), float(r["p"]), float(r["p_holm"]), r["seeds_a"]) for r in written
    ] == [("final_last_0.1", 9.0, 0.1, 0.2, "3"), ("whole_run_mean_10_windows", 6.0, 0.1, 0.2, "3")]
    assert [(float(r["pooled_sd"]), r["seeds_for_power"]) for r in written] == [(1.0, "5"), (1.0, "5")]
    for r in written:
        assert float(r["ci_low"]) <= float(r["mean_b_minus_a"]) <= float(r["ci_high"])
    code, again, _ = clipzoo(
        "table",
        str(tmp_path),
        "--metric",
        "charts/episodic_return",
        "--compare",
        "adam",
        "wc",
        "--compare",
        "adam",
        "wc",
    )  # the same pair twice counts once; the same numbers on a rerun
    assert code == 0 and again == out.split("wrote")[0]


def test_table_compare_refuses_an_unknown_variant_in_one_line_with_the_closest_name(tmp_path, clipzoo):
    for seed in range(2):
        write_constant_run(tmp_path, "Hopper-v5", "adam", seed, 1, 1)
        write_constant_run(tmp_path, "Hopper-v5", "adam_wc", seed, 2, 2)
    code, out, err = clipzoo(
        "table", str(tmp_path), "--metric", "charts/episodic_return", "--compare", "adma", "adam_wc"
    )
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "error: --compare: no variant 'adma' in the sweep; did you mean 'adam'? variants: adam, adam_wc"
    ]
    code, _, err = clipzoo("table", str(tmp_path), "--metric", "charts/episodic_return", "--compare", "adam", "adam")
    assert code == 2 and "name two different variants" in err


def test_variant_keeps_only_the_named_variants_in_table_plot_and_compare(tmp_path, clipzoo):
    for seed in range(3):
        write_constant_run(tmp_path, "Hopper-v5", "adam", seed, 1 + seed, 1 + seed)
        write_constant_run(tmp_path, "Hopper-v5", "wc", seed, 4 + seed, 10 + seed)
        write_constant_run(tmp_path, "Hopper-v5", "redo", seed, 100, 100)
    metric = ("--metric", "charts/episodic_return")
    code, out, err = clipzoo("table", str(tmp_path), *metric, "--variant", "wc", "--variant", "adam")
    assert code == 0, err
    rows = [line.split(" | ")[1] for line in out.splitlines() if line.startswith("| Hopper-v5 |")]
    assert rows == ["adam", "wc"]  # redo left out, the table's own order kept
    # the comparison over the kept variants is the one computed over the whole sweep
    _, selected, _ = clipzoo(
        "table", str(tmp_path), *metric, "--variant", "adam", "--variant", "wc", "--compare", "adam", "wc"
    )
    _, everything, _ = clipzoo("table", str(tmp_path), *metric, "--compare", "adam", "wc")
    compared = [line for line in selected.splitlines() if line.startswith("| Hopper-v5 | adam | wc |")]
    assert len(compared) == 2 and compared == [line for line in everything.splitlines() if line in compared]
    out_png = tmp_path / "figure" / "adam_only.png"
    code, out, err = clipzoo("plot", str(tmp_path), *metric, "--variant", "adam", "--out", str(out_png))
    assert code == 0, err
    plotted = out_png.with_suffix(".csv").read_text()
    assert "adam" in plotted and "wc" not in plotted and "redo" not in plotted
    code, out, err = clipzoo("table", str(tmp_path), *metric, "--variant", "wcc")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "error: --variant: no variant 'wcc' in the sweep; did you mean 'wc'? variants: adam, redo, wc"
    ]
    code, out, err = clipzoo("table", str(tmp_path), *metric, "--variant", "adam", "--compare", "adam", "wc")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["error: --compare: variant 'wc' is left out by --variant; name it there too"]


def test_compared_whole_run_means_cover_only_the_windows_every_seed_of_both_logged(tmp_path, clipzoo):
    for seed in range(3):
        write_constant_run(tmp_path, "Hopper-v5", "adam", seed, 1 + seed, 100)  # 1, 2, 3 up to 500, then 100
        write_constant_run(tmp_path, "Hopper-v5", "wc", seed, 4 + seed, 0, last_step=500)  # 4, 5, 6, stopped at 500
    code, out, err = clipzoo(
        "table", str(tmp_path), "--metric", "charts/episodic_return", "--compare", "adam", "wc", "--include-partial"
    )
    assert code == 0, err
    # 10 windows of 100 steps, a point each; wc logged the first 5, where adam's runs hold 1, 2, 3 and wc's 4, 5, 6
    # (over all 10 windows adam's would be 50.5, 51, 51.5); each group's final value is at its own last step
    assert "| Hopper-v5 | adam | wc | whole-run mean | 3 | [" in out
    assert "| Hopper-v5 | adam | wc | final | -95 | [" in out
    assert "Hopper-v5: adam v wc: charts/episodic_return has points from every seed of both in 5 of 10 windows" in out


def test_interval_estimates_repeat_whatever_numpys_global_state():
    from runners.aggregates import interval_estimates

    scores = {"a": np.array([[1.0], [2.0], [4.0], [7.0], [3.0]])}
    np.random.seed(1)
    first = interval_estimates(scores)
    np.random.seed(2)
    assert interval_estimates(scores) == first


def test_holm_corrects_the_comparisons_of_several_commands_together(tmp_path, clipzoo):
    # sweep a: 3 v 3 seeds, every wc seed above every adam seed: exact p 2/C(6,3) = 0.1 for each of its 2 tests;
    # sweep b: 4 v 4, the same: p 2/C(8,4) = 2/70 for each of its 2 tests
    for sweep, seeds in (("a", 3), ("b", 4)):
        for seed in range(seeds):
            write_constant_run(tmp_path / sweep, "Hopper-v5", "adam", seed, 1 + seed, 1 + seed)
            write_constant_run(tmp_path / sweep, "Hopper-v5", "wc", seed, 10 + seed, 20 + seed)
        code, _, err = clipzoo(
            "table", str(tmp_path / sweep), "--metric", "charts/episodic_return", "--compare", "adam", "wc",
            "--csv", str(tmp_path / f"{sweep}.csv"),
        )  # fmt: skip
        assert code == 0, err
    pooled = tmp_path / "pooled.csv"
    code, out, err = clipzoo(
        "holm", str(tmp_path / "a_compare.csv"), str(tmp_path / "b_compare.csv"), "--csv", str(pooled)
    )
    assert code == 0, err
    # Holm over the 4 p-values (2/70, 2/70, 0.1, 0.1): 4 x 2/70 = 0.1143, then max(0.1143, 3 x 2/70) = 0.1143,
    # max(0.1143, 2 x 0.1) = 0.2, max(0.2, 0.1) = 0.2; within its own command b's Holm p is 2 x 2/70 = 0.05714
    rows = {(Path(r["file"]).name, r["measure"]): r for r in csv.DictReader(io.StringIO(pooled.read_text()))}
    assert {key: float(r["p_holm_pooled"]) for key, r in rows.items()} == pytest.approx(
        {
            ("a_compare.csv", "final_last_0.1"): 0.2,
            ("a_compare.csv", "whole_run_mean_10_windows"): 0.2,
            ("b_compare.csv", "final_last_0.1"): 8 / 70,
            ("b_compare.csv", "whole_run_mean_10_windows"): 8 / 70,
        },
        rel=1e-5,
    )
    assert float(rows[("b_compare.csv", "final_last_0.1")]["p_holm"]) == pytest.approx(4 / 70, rel=1e-5)
    assert (
        f"| {tmp_path / 'b_compare.csv'} | charts/episodic_return | Hopper-v5 | adam | wc | final_last_0.1 | 19 | ["
        in out
    )
    assert "| 0.02857 | 0.05714 | 0.1143 | 4, 4 | 5 |" in out  # d 19, sd 1.29: the floor of 5 seeds at 4 tests
    assert {r["seeds_for_power_pooled"] for r in rows.values()} == {"5"}
    assert "over the 4 tests of the 2 files together" in out
    code, _, err = clipzoo("holm", str(tmp_path / "a_compare.csv"), str(tmp_path / "b_compare.csv"), "--tests", "4")
    assert code == 0, err
    header = (tmp_path / "a_compare.csv").read_text().splitlines()[0]
    (tmp_path / "empty_compare.csv").write_text(header + "\n")
    first = (tmp_path / "a_compare.csv").read_text().splitlines()[1].split(",")
    first[8] = "high"  # the p column
    (tmp_path / "bad_compare.csv").write_text(header + "\n" + ",".join(first) + "\n")
    good = (tmp_path / "a_compare.csv").read_text().splitlines()[1].split(",")
    columns = header.split(",")
    for name, cells in (
        ("cut_after_measure", good[: columns.index("measure") + 1]),  # p missing, not blank: no test silently lost
        ("cut_after_seeds", good[: columns.index("seeds_b") + 1]),
        ("blank_sd", [*good[: columns.index("pooled_sd")], "", good[-1]]),
    ):
        (tmp_path / f"{name}_compare.csv").write_text(header + "\n" + ",".join(cells) + "\n")
    old_header = ",".join(columns[: columns.index("pooled_sd")])
    (tmp_path / "older_compare.csv").write_text(old_header + "\n" + ",".join(good[: columns.index("pooled_sd")]) + "\n")
    a, b = str(tmp_path / "a_compare.csv"), str(tmp_path / "b_compare.csv")
    for argv, message in (
        ([str(tmp_path / "a.csv")], "a.csv is not a comparisons CSV of table --compare --csv"),
        ([str(tmp_path / "nothing.csv")], "nothing.csv is not a file"),
        ([a, str(tmp_path / "out" / ".." / "a_compare.csv")], "are one file: its tests would count twice"),
        ([a, b, "--tests", "6"], "the files hold 4 tests, not the 6 of --tests"),
        ([str(tmp_path / "empty_compare.csv")], "empty_compare.csv holds no comparison"),
        (
            [str(tmp_path / "bad_compare.csv")],
            "bad_compare.csv, line 2: not a row of table --compare --csv (p: 'high')",
        ),
        (
            [str(tmp_path / "cut_after_measure_compare.csv")],
            "line 2: not a row of table --compare --csv (5 cells, not 17)",
        ),
        (
            [str(tmp_path / "cut_after_seeds_compare.csv")],
            "line 2: not a row of table --compare --csv (15 cells, not 17)",
        ),
        ([str(tmp_path / "blank_sd_compare.csv")], "line 2: not a row of table --compare --csv (pooled_sd: '')"),
        (
            [str(tmp_path / "older_compare.csv")],
            "was written before comparisons CSVs had pooled_sd and seeds_for_power",
        ),
    ):
        code, _, err = clipzoo("holm", *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
