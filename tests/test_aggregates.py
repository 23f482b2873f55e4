"""rliable-based aggregates against hand-computed numbers and a slow bootstrap written here."""

import numpy as np

from runners.aggregates import interval_estimates, performance_profiles


def slow_percentile_bootstrap(values: np.ndarray, statistic, reps: int = 20000, seed: int = 1):
    rng = np.random.default_rng(seed)
    draws = [statistic(values[rng.integers(0, len(values), len(values))]) for _ in range(reps)]
    return np.quantile(draws, 0.025), np.quantile(draws, 0.975)


def middle_half_mean(values: np.ndarray) -> float:
    ordered = np.sort(values)
    cut = int(0.25 * len(ordered))  # scipy.stats.trim_mean's rule: whole runs only
    return float(ordered[cut:len(ordered) - cut].mean())


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
    estimate = interval_estimates({"v": values[:, None]}, reps=20000)["v"]
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
