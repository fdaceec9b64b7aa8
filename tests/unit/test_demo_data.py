"""The demo's churn data: deterministic, shaped as documented, and shifted as documented."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from modelmon.demo.data import (
    CATEGORICAL_FEATURES,
    COLUMNS,
    CONTRACTS,
    INTERNET,
    NEW_PAYMENT_METHOD,
    NUMERIC_FEATURES,
    PAYMENT_METHODS,
    REGIONS,
    TARGET,
    generate_customers,
)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return generate_customers(5000, seed=10)


@pytest.fixture(scope="module")
def shifted() -> pd.DataFrame:
    # Another seed, so that unshifted columns are independent samples, not copies.
    return generate_customers(5000, seed=11, shift=True)


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    pd.testing.assert_frame_equal(generate_customers(300, seed=4), generate_customers(300, seed=4))
    assert not generate_customers(300, seed=4).equals(generate_customers(300, seed=5))


def test_columns_and_dtypes(reference: pd.DataFrame) -> None:
    assert list(reference.columns) == COLUMNS
    assert set(COLUMNS) == {*NUMERIC_FEATURES, *CATEGORICAL_FEATURES, TARGET}
    for name in ("tenure_months", "support_calls", "age"):
        assert reference[name].dtype == np.int64, name
    for name in ("monthly_charges", "total_charges"):
        assert reference[name].dtype == np.float64, name
    for name in (*CATEGORICAL_FEATURES, TARGET):
        assert pd.api.types.is_string_dtype(reference[name]), name
    assert len(generate_customers(0)) == 0


def test_values_stay_in_their_documented_ranges(reference: pd.DataFrame) -> None:
    assert reference.tenure_months.between(1, 72).all()
    assert reference.age.between(18, 90).all()
    assert (reference.support_calls >= 0).all()
    assert (reference.monthly_charges >= 18.25).all()
    ratio = reference.total_charges / (reference.monthly_charges * reference.tenure_months)
    assert ratio.between(0.949, 1.051).all()
    assert set(reference.contract) == set(CONTRACTS)
    assert set(reference.internet_service) == set(INTERNET)
    assert set(reference.region) == set(REGIONS)
    assert set(reference.payment_method) == set(PAYMENT_METHODS) - {NEW_PAYMENT_METHOD}
    assert set(reference[TARGET]) == {"yes", "no"}
    assert reference.isna().sum().sum() == 0


@pytest.mark.parametrize("seed", range(5))
def test_churn_rate_is_about_a_quarter(seed: int) -> None:
    rate = generate_customers(2000, seed=seed)[TARGET].eq("yes").mean()
    assert 0.20 <= rate <= 0.30


def test_churn_follows_the_documented_drivers() -> None:
    frame = generate_customers(20_000, seed=3)
    churned = frame[TARGET].eq("yes")
    by_contract = churned.groupby(frame.contract).mean()
    assert by_contract["month-to-month"] > by_contract["one-year"] > by_contract["two-year"]
    assert churned[frame.tenure_months <= 12].mean() > churned[frame.tenure_months > 36].mean()
    assert churned[frame.support_calls >= 3].mean() > churned[frame.support_calls == 0].mean()
    # region is documented to have no effect: every region churns at about the overall rate
    by_region = churned.groupby(frame.region).mean()
    assert (by_region - churned.mean()).abs().max() < 0.03


def test_contract_shares_before_and_after_the_shift(
    reference: pd.DataFrame, shifted: pd.DataFrame
) -> None:
    assert reference.contract.eq("month-to-month").mean() == pytest.approx(0.55, abs=0.03)
    assert shifted.contract.eq("month-to-month").mean() == pytest.approx(0.75, abs=0.03)
    table = pd.crosstab(
        np.r_[np.zeros(len(reference)), np.ones(len(shifted))],
        np.r_[reference.contract, shifted.contract],
    )
    assert stats.chi2_contingency(table).pvalue < 1e-6


def test_shift_raises_monthly_charges_and_only_the_documented_columns(
    reference: pd.DataFrame, shifted: pd.DataFrame
) -> None:
    assert stats.ks_2samp(reference.monthly_charges, shifted.monthly_charges).pvalue < 1e-6
    assert shifted.monthly_charges.mean() / reference.monthly_charges.mean() == pytest.approx(
        1.15, abs=0.02
    )
    for name in ("tenure_months", "age", "support_calls"):
        assert stats.ks_2samp(reference[name], shifted[name]).pvalue > 0.01, name


def test_new_payment_method_appears_only_when_shifted(
    reference: pd.DataFrame, shifted: pd.DataFrame
) -> None:
    for seed in range(5):
        assert NEW_PAYMENT_METHOD not in set(generate_customers(5000, seed=seed).payment_method)
    assert shifted.payment_method.eq(NEW_PAYMENT_METHOD).mean() == pytest.approx(0.20, abs=0.02)


def test_shift_raises_the_churn_rate(reference: pd.DataFrame, shifted: pd.DataFrame) -> None:
    assert shifted[TARGET].eq("yes").mean() > reference[TARGET].eq("yes").mean() + 0.04


def test_negative_row_count_is_refused() -> None:
    with pytest.raises(ValueError, match="n_rows"):
        generate_customers(-1)
