"""Confidence intervals over seeds, differences against a reference, Pareto ties and the summary lines, on known inputs."""

import pytest

from bench import aggregate, report, stats


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
    view = aggregate.VIEWS["classify"]
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
    lines = report.summary_lines(rows, aggregate.VIEWS["classify"], reference="cnn-baseline")
    assert lines == [
        "cnn-baseline (bf16): +0.6 points against cnn-baseline in test accuracy (too few seeds for an interval: 3 and 1).",
        "cnn-bn (bf16) is 1.1 points above cnn-baseline (bf16) in test accuracy (95% CI 0.9 to 1.3, paired by seed, 3 seeds).",
        "vgg (bf16): +2.5 points against cnn-baseline (bf16) in test accuracy (too few seeds for an interval: 1 and 3).",
        "cnn-wide (fp16): +2.3 points against cnn-baseline in test accuracy (too few seeds for an interval: 3 and 1).",
    ]


def test_with_one_seed_each_the_summary_says_so_once():
    rows = aggregate.aggregate(records("cnn-baseline", [0.90], [100]) + records("cnn-bn", [0.91], [90]))
    (line,) = report.summary_lines(rows, aggregate.VIEWS["classify"])
    assert line.startswith("One seed per architecture: no confidence intervals")
