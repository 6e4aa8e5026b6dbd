from phenomlab.phenomena._stats import fmt_ci


def test_fmt_ci_formats_value_and_interval_with_one_spec():
    assert fmt_ci(0.12345, -0.5, 1.0) == "0.123 [-0.500, 1.000]"
    assert fmt_ci(-0.4321, -0.6789, 0.0612, ".2f") == "-0.43 [-0.68, 0.06]"


def test_fmt_ci_says_na_for_what_was_not_measured():
    assert fmt_ci(None, None, None, ".2f") == "n/a [n/a, n/a]"
    assert fmt_ci(1.5, None, 2.0, ".1f") == "1.5 [n/a, 2.0]"
