"""A seeded, synthetic customer-churn table for the demo, the docs and the drift tests.

Made-up data, shaped like a telecom churn dataset, so that the demo needs no download and
every number it prints can be reproduced from a seed. One row is one customer:

==================  ========  ===================================================================
column              dtype     meaning and distribution (``shift=False``)
==================  ========  ===================================================================
tenure_months       int64     months as a customer, 1-72; many new customers (gamma, mean ~24)
contract            string    ``month-to-month`` (~55%), ``one-year``, ``two-year``; long
                              contracts are likelier for long-tenure customers
internet_service    string    ``fiber optic`` (45%), ``dsl`` (35%), ``none`` (20%)
monthly_charges     float64   dollars a month: about 20 without internet, 55 with DSL, 85 with
                              fiber, plus normal noise (sd 10), at least 18.25, in cents
total_charges       float64   dollars billed so far: monthly charges x tenure, +-5% noise
support_calls       int64     support calls in the last quarter: Poisson, mean 1.2 (1.6 on fiber)
age                 int64     years, 18-90, normal around 45 (sd 14)
payment_method      string    ``electronic check`` (35%), ``mailed check`` (20%),
                              ``bank transfer`` (22%), ``credit card`` (23%)
region              string    ``north`` (30%), ``south`` (25%), ``east`` (25%), ``west`` (20%)
churned             string    the target, ``"yes"`` or ``"no"``
==================  ========  ===================================================================

``string`` columns hold Python strings in pandas' default string dtype (``str`` from pandas 3,
``object`` before), which is what a CSV or Parquet file gives back.

``churned`` is drawn as Bernoulli(sigmoid(z + e)) with unobserved noise e ~ N(0, 0.5) and

    z = -2.6 + 1.3 [month-to-month] - 1.2 [two-year] + 0.5 [fiber optic]
        + 0.025 (monthly_charges - 65) - 0.035 (tenure_months - 24)
        + 0.3 (support_calls - 1) + 0.4 [electronic check] - 0.01 (age - 45)

which gives a churn rate of about 25% (between 20% and 30% for any seed and a couple of
thousand rows). ``region`` has no effect on churn: real tables hold features that don't matter.

``shift=True`` describes the same customers a few months later, after a price rise and a
product launch (covariate shift: the formula for ``z`` stays the same):

- ``monthly_charges`` rise by 15% (and ``total_charges`` with them);
- ``contract``: month-to-month rises to about 75% (a promotion for no-commitment plans);
- ``payment_method``: a new category, ``digital wallet``, never seen in training, takes
  20% of customers, the others shrinking in proportion.

Every other column keeps its distribution, and the churn rate rises (to about 33%) because
two of its drivers moved.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TARGET = "churned"
NUMERIC_FEATURES = ["tenure_months", "monthly_charges", "total_charges", "support_calls", "age"]
CATEGORICAL_FEATURES = ["contract", "internet_service", "payment_method", "region"]
COLUMNS = [
    "tenure_months", "contract", "internet_service", "monthly_charges", "total_charges",
    "support_calls", "age", "payment_method", "region", TARGET,
]

CONTRACTS = np.array(["month-to-month", "one-year", "two-year"])
INTERNET = np.array(["fiber optic", "dsl", "none"])
INTERNET_SHARES = [0.45, 0.35, 0.20]
INTERNET_BASE_CHARGE = np.array([85.0, 55.0, 20.0])
PAYMENT_METHODS = np.array(
    ["electronic check", "mailed check", "bank transfer", "credit card", "digital wallet"]
)
PAYMENT_SHARES = np.array([0.35, 0.20, 0.22, 0.23, 0.0])
#: The category that exists only in shifted data.
NEW_PAYMENT_METHOD = "digital wallet"
NEW_PAYMENT_SHARE = 0.20
REGIONS = np.array(["north", "south", "east", "west"])
REGION_SHARES = [0.30, 0.25, 0.25, 0.20]
PRICE_RISE = 1.15


def generate_customers(n_rows: int, seed: int = 0, shift: bool = False) -> pd.DataFrame:
    """``n_rows`` customers as documented in this module; the same seed gives the same rows."""
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    rng = np.random.default_rng(seed)
    tenure = np.clip(np.rint(rng.gamma(1.4, 17.0, n_rows)), 1, 72).astype(np.int64)
    contract = _contracts(rng, tenure, shift)
    internet = rng.choice(len(INTERNET), n_rows, p=INTERNET_SHARES)
    noise = rng.normal(0.0, 10.0, n_rows)
    monthly = np.maximum(INTERNET_BASE_CHARGE[internet] + noise, 18.25)
    if shift:
        monthly = monthly * PRICE_RISE
    monthly = np.round(monthly, 2)
    total = np.round(monthly * tenure * rng.uniform(0.95, 1.05, n_rows), 2)
    fiber = internet == 0
    support_calls = rng.poisson(np.where(fiber, 1.6, 1.2)).astype(np.int64)
    age = np.clip(np.rint(rng.normal(45.0, 14.0, n_rows)), 18, 90).astype(np.int64)
    payment = rng.choice(len(PAYMENT_METHODS), n_rows, p=_payment_shares(shift))
    region = rng.choice(len(REGIONS), n_rows, p=REGION_SHARES)

    z = (
        -2.6
        + 1.3 * (contract == 0)
        - 1.2 * (contract == 2)
        + 0.5 * fiber
        + 0.025 * (monthly - 65.0)
        - 0.035 * (tenure - 24.0)
        + 0.3 * (support_calls - 1.0)
        + 0.4 * (payment == 0)
        - 0.01 * (age - 45.0)
        + rng.normal(0.0, 0.5, n_rows)
    )
    churned = rng.random(n_rows) < 1.0 / (1.0 + np.exp(-z))

    return pd.DataFrame(
        {
            "tenure_months": tenure,
            "contract": CONTRACTS[contract],
            "internet_service": INTERNET[internet],
            "monthly_charges": monthly,
            "total_charges": total,
            "support_calls": support_calls,
            "age": age,
            "payment_method": PAYMENT_METHODS[payment],
            "region": REGIONS[region],
            TARGET: np.where(churned, "yes", "no"),
        },
        columns=COLUMNS,
    )


def _contracts(rng: np.random.Generator, tenure: np.ndarray, shift: bool) -> np.ndarray:
    """Contract index per customer: a softmax whose long-contract scores grow with tenure,
    so that loyal customers are the committed ones, as in real churn data."""
    years = tenure / 12.0
    scores = np.stack(
        [np.full_like(years, 1.4 if shift else 0.45), -0.8 + 0.3 * years, -1.8 + 0.5 * years],
        axis=1,
    )
    shares = np.exp(scores)
    shares /= shares.sum(axis=1, keepdims=True)
    draws = rng.random((len(tenure), 1))
    return np.minimum((draws > np.cumsum(shares, axis=1)).sum(axis=1), len(CONTRACTS) - 1)


def _payment_shares(shift: bool) -> np.ndarray:
    if not shift:
        return PAYMENT_SHARES
    shares = PAYMENT_SHARES * (1.0 - NEW_PAYMENT_SHARE)
    shares[PAYMENT_METHODS == NEW_PAYMENT_METHOD] = NEW_PAYMENT_SHARE
    return shares
