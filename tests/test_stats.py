"""Confidence intervals over seeds, differences against a reference, Pareto ties and the summary lines; quantiles,
the signed-rank interval and the Mann-Whitney test; all on known inputs."""

import math

import pytest

from bench import stats
from bench.results import aggregate, report
from bench.tasks import CLASSIFIERS


@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (10, 2.228), (30, 2.042), (60, 2.000), (120, 1.980)])
def test_t_quantiles_match_the_tables(df, expected):
    assert stats.t_quantile(df) == pytest.approx(expected, abs=0.001)


def test_a_mean_interval_is_student_t_over_the_values():
    found = stats.mean_interval([1.0, 2.0, 3.0])  # mean 2, standard deviation 1
    assert found.estimate == 2.0 and found.n == 3
    assert found.half_width == pytest.approx(4.303 / 3**0.5, abs=1e-3)
    assert stats.mean_interval([1.0]) is None


def test_a_difference_is_paired_by_seed_where_the_seeds_match_and_unpaired_otherwise():
    paired = stats.difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.5, 1: 1.4, 2: 2.6})  # differences 0.5, 0.6, 0.4
    assert paired.paired and paired.estimate == pytest.approx(0.5) and paired.significant
    assert paired.half_width == pytest.approx(4.303 * 0.1 / 3**0.5, abs=1e-3)
    unpaired = stats.difference({0: 1.0, 1: 2.0, 2: 3.0}, {5: 0.5, 6: 1.4, 7: 2.6})  # Welch: same spread, no pairing
    assert not unpaired.paired and unpaired.estimate == pytest.approx(0.5) and not unpaired.significant
    assert stats.difference({0: 1.0}, {0: 2.0, 1: 3.0}) is None



def test_quantiles_interpolate_linearly_between_the_sorted_values():
    ordered = [float(v) for v in range(1, 11)]  # positions 0..9: q = 0.25 falls at 2.25, between 3 and 4
    assert [stats.quantile(ordered, q) for q in (0, 0.25, 0.5, 0.75, 1)] == [1.0, 3.25, 5.5, 7.75, 10.0]
    assert stats.quantile(ordered, 0.95) == pytest.approx(9.55)  # position 8.55: 9 + 0.55
    assert stats.quantile([4.0], 0.95) == 4.0


def test_the_interquartile_range_is_the_third_quartile_less_the_first_and_ignores_an_outlier():
    assert stats.quartiles([10, 3, 1, 7, 5, 2, 9, 4, 8, 6]) == (3.25, 7.75)  # sorted first
    assert stats.iqr([10, 3, 1, 7, 5, 2, 9, 4, 8, 6]) == 4.5
    assert stats.iqr([100, 1, 3, 2, 4]) == 2.0  # quartiles at positions 1 and 3 of 1, 2, 3, 4, 100: 2 and 4
    assert stats.iqr([5.0]) == 0.0


def test_the_signed_rank_interval_of_seven_values_leaves_out_two_walsh_averages_at_each_end():
    # n = 7: P(W+ <= 2) = 3/128 = 0.023 <= 0.025 < P(W+ <= 3) = 5/128, so k = 3. The Walsh averages of 1..7,
    # sorted, begin 1, 1.5, 2 and end 6, 6.5, 7.
    assert stats.signed_rank_interval([4, 1, 7, 3, 6, 2, 5]) == (2.0, 6.0)
    assert stats.signed_rank_interval([1, 2, 3, 4, 5]) == (-math.inf, math.inf)  # too few for 95%
    assert stats.signed_rank_interval([]) == (-math.inf, math.inf)


def test_a_ratio_interval_is_the_signed_rank_interval_of_the_logs_and_open_with_too_few_ratios():
    median, low, high = stats.ratio_interval([0.5, 1, 2, 2, 4, 1])  # n = 6: k = 1, the extreme ratios
    assert median == 1.5 and low == pytest.approx(0.5) and high == pytest.approx(4.0)
    assert stats.ratio_interval([1, 2, 3, 4, 5]) == (3, 0.0, math.inf)


def test_the_mann_whitney_p_value_is_exact_for_small_samples():
    # Five values wholly below five others: 1 of the C(10, 5) = 252 orderings, doubled for two sides.
    assert stats.mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert stats.mann_whitney_p([1, 3, 5, 7, 9], [2, 4, 6, 8, 10]) > 0.5  # interleaved: no evidence of a shift


def records(name, accuracies, throughputs, seeds=None):
    return [
        {"task": "classify", "dataset": "d", "architecture": name, "config_id": "c-" + name, "status": "ok", "seed": seed,
         "test_accuracy": accuracy, "train_throughput": throughput}
        for seed, accuracy, throughput in zip(seeds or range(len(accuracies)), accuracies, throughputs)
    ]


def test_rows_within_each_others_noise_tie_and_share_the_pareto_front():
    rows = aggregate.aggregate(
        records("a", [0.80, 0.81, 0.82], [100, 104, 98])
        + records("b", [0.805, 0.82, 0.81], [99, 101, 103])  # within a's noise on both axes
        + records("c", [0.50, 0.51, 0.52], [50, 51, 52])  # beaten by both, significantly
    )
    assert {row.architecture: row.pareto for row in rows} == {"a": True, "b": True, "c": False}
    single = aggregate.aggregate(records("a", [0.80], [100]) + records("b", [0.81], [101]))
    assert {row.architecture: row.pareto for row in single} == {"a": False, "b": True}  # one seed: the means decide


def test_summary_lines_say_in_words_whether_a_difference_is_significant():
    rows = aggregate.aggregate(
        records("cnn-baseline", [0.900, 0.905, 0.910], [100, 100, 100])
        + records("cnn-bn", [0.911, 0.915, 0.922], [90, 90, 90])
        + records("cnn-deep", [0.905, 0.898, 0.911], [80, 80, 80])
    )
    view = CLASSIFIERS
    lines = report.summary_lines(rows, view)
    assert lines[0] == "cnn-bn is 1.1 points above cnn-baseline in test accuracy (95% CI 0.9 to 1.3, paired by seed, 3 seeds)."
    assert lines[1].startswith("cnn-deep: no significant difference from cnn-baseline in test accuracy (-0.0 points")
    assert report.summary_lines(rows, view, reference="cnn-bn")[0].startswith("cnn-baseline is 1.1 points below cnn-bn")


def test_architectures_are_compared_with_the_reference_in_their_own_mode():
    def moded(mode, *args):
        return [dict(r, mode=mode, config_id=r["config_id"] + mode) for r in records(*args)]

    rows = aggregate.aggregate(
        moded("fp32", "cnn-baseline", [0.899], [50])  # one seed of the fp32 reference, listed first
        + moded("bf16", "cnn-baseline", [0.900, 0.905, 0.910], [100, 100, 100])
        + moded("bf16", "cnn-bn", [0.911, 0.915, 0.922], [90, 90, 90])
        + moded("bf16", "vgg", [0.93], [10])  # a mode the reference ran in, one seed
        + moded("fp16", "cnn-wide", [0.92, 0.921, 0.925], [70, 70, 70])  # a mode the reference did not run in
    )
    lines = report.summary_lines(rows, CLASSIFIERS, reference="cnn-baseline")
    assert lines == [
        "cnn-baseline (bf16): +0.6 points against cnn-baseline in test accuracy (too few seeds for an interval: 3 and 1).",
        "cnn-bn (bf16) is 1.1 points above cnn-baseline (bf16) in test accuracy (95% CI 0.9 to 1.3, paired by seed, 3 seeds).",
        "vgg (bf16): +2.5 points against cnn-baseline (bf16) in test accuracy (too few seeds for an interval: 1 and 3).",
        "cnn-wide (fp16): +2.3 points against cnn-baseline in test accuracy (too few seeds for an interval: 3 and 1).",
    ]


def test_with_one_seed_each_the_summary_says_so_once():
    rows = aggregate.aggregate(records("cnn-baseline", [0.90], [100]) + records("cnn-bn", [0.91], [90]))
    (line,) = report.summary_lines(rows, CLASSIFIERS)
    assert line.startswith("One seed per architecture: no confidence intervals")
