"""Synthetic landing folder for the tiers pipeline (data-contract.md section 1).

Everything per customer, account, day or transaction is computed by DuckDB in set-based SQL; Python
only loops over months and output files, so a million customers take minutes.

Every random draw is `unit(key_a, key_b, salt)`: DuckDB's `hash()` of the seed, two keys and a salt,
mapped to [0, 1). No `random()`, no floating-point aggregation, and every file is written with an
ORDER BY on a unique key, so the same arguments give byte-identical files whatever the thread count
(with the same DuckDB version, whose `hash()` is not promised stable across releases).

Customer stories, chosen from `unit(customer_id, ...)`:
- `unrated`: no accounts, no transactions, no products (tier 0).
- `ultra`: tens of millions CNY, mostly in demand deposits (seven-star territory).
- `stable`: a log-uniform wealth level with a little monthly drift (spreads over tiers 1..6).
- `riser`: from a chosen month on, balances grow by 5-25% a month, up to 25 times.
- `faller`: in a month mid-period balances drop to near zero and the extra asset account closes, so
  the customer sits in a downgrade buffer until a June 30 / December 31 review.
- `private`: 5M to 16M CNY, around the private-banking standards (6M net, 8M and 10M gross); half
  of them owe a business loan of a fifth to four fifths of it, so net and gross assets tell them apart.
Independent of the story (never for `unrated`): an extra asset account, a loan (a few substandard,
`loss` while a `loan_loss` event is active), a credit card (a floor; balances on its overdraft
account), a wealth/elite/private-banking product, a USD or HKD deposit or time deposit (far more
often for `private` and `ultra`), a credit event (some cured during the period).
Card holders also book installment plans (`card_installment` transactions), earn card reward
points (`card_points`, a ledger of its own, not derived from the spending transactions) and most
have a credit score (`credit_scores`, some below 550, some re-scored during the period); both
follow one `card_activity` draw, so heavy card users reach Guangfa's upper star bands.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import duckdb

from ground.months import Month
from ground.paths import path_literal

UNRATED_SHARE = 0.03

# (story, share of all customers); the rest are `stable`.
STORY_SHARES = [("unrated", UNRATED_SHARE), ("ultra", 0.003), ("private", 0.005), ("riser", 0.07),
                ("faller", 0.07)]

# Wealth levels in CNY, log-uniform. Seven-star needs a 6-month short-term ADB of ~5.93M CNY (80,000
# points at 135 per 10,000), so `ultra` starts far above that even after the demand-deposit share and
# monthly drift; `private` customers are mostly seven-star too, as ICBC's private-banking clients are.
WEALTH_RANGE = (20.0, 2_000_000.0)
ULTRA_WEALTH_RANGE = (80_000_000.0, 300_000_000.0)
# Around the private-banking standards: 6M net (regulator), 8M gross, 10M gross (programs.md section 6).
PRIVATE_WEALTH_RANGE = (5_000_000.0, 16_000_000.0)
PRIVATE_LOAN_SHARE = 0.5

# The second asset account a customer may hold, by share of those who have one.
EXTRA_ASSET_MIX = [
    ("time_deposit", 0.30), ("wmp", 0.18), ("fund", 0.14), ("money_market_fund", 0.10),
    ("insurance", 0.07), ("government_bond", 0.05), ("brokerage_custody", 0.05),
    ("housing_fund", 0.04), ("gold", 0.03), ("overnight_wmp", 0.02), ("credit_card_deposit", 0.02),
]
# (loan product, share of active customers, log-uniform amount range in CNY)
LOANS = [
    ("mortgage", 0.06, (300_000.0, 3_000_000.0)),
    ("consumer_loan", 0.045, (20_000.0, 300_000.0)),
    ("business_loan", 0.015, (50_000.0, 1_000_000.0)),
]
# Held products (floors), by share of active customers: about 8% hold a credit card.
CARD_MIX = [("credit_card_standard", 0.05), ("credit_card_gold", 0.02), ("credit_card_platinum", 0.01)]
PERK_MIX = [("elite_club_account", 0.006), ("wealth_card", 0.004), ("private_banking_agreement", 0.001)]

TXN_TYPE_MIX = [
    ("card_pos", 0.35), ("transfer", 0.20), ("salary_credit", 0.08), ("atm_local", 0.08),
    ("remittance", 0.05), ("fund_trade", 0.05), ("fee", 0.04), ("wmp_purchase", 0.04),
    ("fx_trade", 0.03), ("remote_cash", 0.02), ("bond_purchase", 0.02),
    ("insurance_purchase", 0.02), ("gold_trade", 0.02),
]
# Amount of a transaction relative to the customer's monthly spending scale.
TXN_AMOUNT_MULTIPLIER = {
    "transfer": 3, "salary_credit": 2, "remittance": 5, "remote_cash": 2, "fx_trade": 5,
    "fund_trade": 10, "wmp_purchase": 10, "bond_purchase": 10, "insurance_purchase": 10,
    "gold_trade": 10,
}
# Common MCCs plus a few of Bank of China's zero-rate ones (utilities, hospitals, schools, government).
MERCHANT_CATEGORIES = [
    "5411", "5812", "5541", "5311", "5691", "5732", "5912", "4111", "7011", "4511", "5999",
    "5814", "4900", "8062", "8211", "9311",
]

# Rough CNY per unit, only for sizing foreign-currency amounts; fx_rates holds the real rates.
FX_APPROX = {"USD": 7.2, "HKD": 0.92}
# Who holds a foreign-currency account: the rich far more often, so that some reach UBS's 2M USD.
FX_SHARE = 0.03
FX_SHARE_RICH = 0.4

# Guangfa card stars (programs.md section 5) need installments and reward points over twelve months;
# the card holder's `card_activity` draw sets both. Monthly points are log-uniform over this range
# (a twelve-month sum of 6,000 to 1,200,000 against the bands 20,000 / 100,000 / 400,000).
MONTHLY_POINTS_RANGE = (500.0, 100_000.0)
POINTS_ENTRIES_MAX = 3                      # reward-points entries a card posts in a month: 1 to 3
INSTALLMENT_CHANCE_RANGE = (0.03, 0.35)     # chance a month has an installment plan booked
INSTALLMENT_AMOUNT_RANGE = (2_000.0, 60_000.0)
# Credit scores (靠谱值, 300..850): most card holders have one, drawn so that about one in five is
# below Guangfa's 550; some are re-scored during the period by up to 80 points either way.
SCORED_SHARE = 0.88
RESCORED_SHARE = 0.35

# Account slots: the suffix of account_id, so an account id never depends on other customers.
SLOT_DEMAND, SLOT_EXTRA, SLOT_LOAN, SLOT_CARD, SLOT_FX = range(5)

FORMATS = {"csv": "(FORMAT csv, HEADER)", "parquet": "(FORMAT parquet)"}


def _pick(draw: str, weighted: list[tuple[str, float]], otherwise: str = "NULL") -> str:
    """A CASE that maps a uniform draw to a code by cumulative share (shares are constants here)."""
    arms, upper = [], 0.0
    for code, share in weighted:
        upper += share
        arms.append(f"WHEN {draw} < {upper!r} THEN '{code}'")
    return f"CASE {' '.join(arms)} ELSE {otherwise} END"


def _lookup(column: str, values: dict, otherwise: str = "NULL") -> str:
    """A CASE that maps a code column to the SQL expression given for each code."""
    arms = " ".join(f"WHEN '{code}' THEN {value}" for code, value in values.items())
    return f"CASE {column} {arms} ELSE {otherwise} END"


CUSTOMERS_SQL = f"""
CREATE TABLE customers AS
WITH numbered AS (
    SELECT i AS cust_num, 'C' || lpad(i::VARCHAR, $id_width, '0') AS customer_id
    FROM range(1, $customers + 1) AS t(i)
), storied AS (
    SELECT *, {_pick("unit(customer_id, 0, 'story')", STORY_SHARES, "'stable'")} AS story
    FROM numbered
), sized AS (
    SELECT *,
        CASE story
            WHEN 'unrated' THEN 0.0
            WHEN 'ultra' THEN log_uniform(unit(customer_id, 0, 'wealth'), {", ".join(map(str, ULTRA_WEALTH_RANGE))})
            WHEN 'private' THEN log_uniform(unit(customer_id, 0, 'wealth'), {", ".join(map(str, PRIVATE_WEALTH_RANGE))})
            ELSE log_uniform(unit(customer_id, 0, 'wealth'), {", ".join(map(str, WEALTH_RANGE))})
        END AS wealth,
        story <> 'unrated' AS active,
        unit(customer_id, 0, 'extra') < 0.5 AND story NOT IN ('unrated', 'ultra') AS has_extra
    FROM storied
), holdings AS (
    SELECT *,
        CASE WHEN story = 'ultra' THEN 0.9 + 0.1 * unit(customer_id, 0, 'dd_share')
             WHEN has_extra THEN 0.3 + 0.6 * unit(customer_id, 0, 'dd_share')
             ELSE 1.0 END AS demand_share,
        CASE WHEN has_extra THEN {_pick("unit(customer_id, 0, 'extra_product')", EXTRA_ASSET_MIX)} END
            AS extra_product,
        CASE WHEN has_extra AND unit(customer_id, 0, 'extra_opens') < 0.25
             THEN $period_start + floor(unit(customer_id, 0, 'extra_open_day') * $period_days)::INT END
            AS extra_open,
        CASE WHEN story = 'private' THEN
                 CASE WHEN unit(customer_id, 0, 'loan') < {PRIVATE_LOAN_SHARE} THEN 'business_loan' END
             WHEN active THEN {_pick("unit(customer_id, 0, 'loan')", [(p, s) for p, s, _ in LOANS])} END
            AS loan_product,
        CASE WHEN active THEN {_pick("unit(customer_id, 0, 'card')", CARD_MIX)} END AS card_product,
        CASE WHEN active THEN {_pick("unit(customer_id, 0, 'perk')", PERK_MIX)} END AS perk_product,
        CASE WHEN active AND unit(customer_id, 0, 'fx')
                  < CASE WHEN story IN ('private', 'ultra') THEN {FX_SHARE_RICH} ELSE {FX_SHARE} END
             THEN CASE WHEN unit(customer_id, 0, 'fx_currency') < 0.7 THEN 'USD' ELSE 'HKD' END END
            AS fx_currency,
        -- mean activity over all customers is 1, so txns_per_customer_month is the overall mean
        CASE WHEN active THEN 2 * unit(customer_id, 0, 'activity') / (1 - {UNRATED_SHARE}) ELSE 0.0 END
            AS activity,
        floor(unit(customer_id, 0, 'rise_from') * ($months // 2 + 1))::INT AS rise_from,
        1.05 + 0.20 * unit(customer_id, 0, 'growth') AS growth,
        ($months // 4 + floor(unit(customer_id, 0, 'drop') * ($months // 2 + 1)))::INT AS drop_month
    FROM sized
), dated AS (
    SELECT *,
        CASE WHEN story = 'private' THEN wealth * (0.2 + 0.6 * unit(customer_id, 0, 'loan_amount'))
             ELSE {_lookup("loan_product", {
                 product: f"log_uniform(unit(customer_id, 0, 'loan_amount'), {low}, {high})"
                 for product, _, (low, high) in LOANS})} END AS loan_amount,
        CASE WHEN unit(customer_id, 0, 'loan_opens') < 0.15
             THEN $period_start + floor(unit(customer_id, 0, 'loan_open_day') * $period_days)::INT END
            AS loan_open,
        unit(customer_id, 0, 'substandard') < 0.03 AS loan_substandard,
        -- about 0.5% of all customers; borrowers default far more often than others
        CASE WHEN unit(customer_id, 0, 'event')
                  < CASE WHEN loan_product IS NOT NULL OR card_product IS NOT NULL THEN 0.02
                         WHEN active THEN 0.0015 ELSE 0 END
             THEN CASE WHEN loan_product IS NOT NULL THEN 'loan_loss'
                       WHEN card_product IS NOT NULL THEN 'credit_card_default_11m'
                       ELSE 'quasi_credit_overdraft_12m' END
        END AS event_code,
        CASE WHEN card_product IS NOT NULL THEN held_since(customer_id, 'card', $period_start, $period_days) END
            AS card_opened,
        CASE WHEN perk_product IS NOT NULL THEN held_since(customer_id, 'perk', $period_start, $period_days) END
            AS perk_opened,
        CASE WHEN wealth >= 6000000 THEN 'private' WHEN wealth >= 500000 THEN 'affluent' ELSE 'mass' END
            AS segment
    FROM holdings
), event_dated AS (
    SELECT *,
        CASE WHEN event_code IS NULL THEN NULL
             WHEN unit(customer_id, 0, 'event_before') < 0.2
             THEN $period_start - (30 + floor(unit(customer_id, 0, 'event_start') * 365))::INT
             ELSE $period_start + floor(unit(customer_id, 0, 'event_start') * $period_days)::INT
        END AS event_started
    FROM dated
)
SELECT *,
    CASE WHEN card_product IS NOT NULL THEN unit(customer_id, 0, 'card_activity') END AS card_activity,
    ended_by(customer_id, 'card', 0.2, card_opened, 1, $period_start, $period_days) AS card_closed,
    ended_by(customer_id, 'perk', 0.1, perk_opened, 1, $period_start, $period_days) AS perk_closed,
    ended_by(customer_id, 'event', 0.5, event_started, 60, $period_start, $period_days) AS event_cured
FROM event_dated
"""

# One row per account. `level` is in the account's currency; `kind` says how a balance moves.
ACCOUNTS_SQL = f"""
CREATE TABLE accounts AS
WITH slots AS (
    SELECT cust_num, customer_id, {SLOT_DEMAND} AS slot, 'demand_deposit' AS product_code, 'CNY' AS currency,
        'daily' AS kind, wealth * demand_share AS level, NULL::DATE AS open_date, NULL::DATE AS close_date
    FROM customers WHERE active
    UNION ALL
    SELECT cust_num, customer_id, {SLOT_EXTRA}, extra_product, 'CNY', 'monthly', wealth * (1 - demand_share),
        extra_open, CASE WHEN story = 'faller' THEN nth_month_start($period_start, drop_month) END
    FROM customers WHERE extra_product IS NOT NULL
    UNION ALL
    SELECT cust_num, customer_id, {SLOT_LOAN}, loan_product, 'CNY', 'loan', loan_amount, loan_open, NULL
    FROM customers WHERE loan_product IS NOT NULL
    UNION ALL
    -- the overdraft of a credit card: owed from the statement until repaid on the 20th
    SELECT cust_num, customer_id, {SLOT_CARD}, 'credit_card_overdraft', 'CNY', 'card',
        least(50000, greatest(200, wealth * 0.03)), card_opened, card_closed
    FROM customers WHERE card_product IS NOT NULL
    UNION ALL
    SELECT cust_num, customer_id, {SLOT_FX},
        CASE WHEN unit(customer_id, 0, 'fx_product') < 0.4 THEN 'time_deposit' ELSE 'demand_deposit' END,
        fx_currency, 'daily',
        greatest(100, wealth * (0.1 + 0.4 * unit(customer_id, 0, 'fx_share'))
            / {_lookup("fx_currency", FX_APPROX)}),
        NULL, NULL
    FROM customers WHERE fx_currency IS NOT NULL
)
SELECT slots.*,
    customer_id || '-' || lpad(slot::VARCHAR, 2, '0') AS account_id,
    cust_num * 8 + slot AS account_key,
    -- a loan is classified `loss` while its holder's loan_loss event is active
    CASE WHEN kind = 'loan' AND event_code = 'loan_loss' THEN event_started END AS loss_from,
    CASE WHEN kind = 'loan' AND event_code = 'loan_loss' THEN event_cured END AS loss_until,
    kind = 'loan' AND loan_substandard AS substandard
FROM slots JOIN customers USING (cust_num, customer_id)
"""

# The month's story factor on asset balances and the month's transaction count, per customer.
MONTH_CUSTOMERS_SQL = """
CREATE OR REPLACE TABLE month_customers AS
WITH factored AS (
    SELECT *,
        CASE story
            WHEN 'riser' THEN least(25, pow(growth, greatest(0, $month_index - rise_from)))
            WHEN 'faller' THEN CASE WHEN $month_index < drop_month THEN 1.0 ELSE 0.002 END
            ELSE 1 + 0.1 * (unit(cust_num, $month_index, 'drift') - 0.5)
        END AS asset_factor
    FROM customers
    WHERE active
)
SELECT cust_num, customer_id, card_product, card_opened, card_closed, card_activity, fx_currency, asset_factor,
    -- floor(x + U) with U uniform on [0, 1) has mean x: whole counts, exact average
    floor($txns_per_customer_month * activity + unit(cust_num, $month_index, 'txn_count'))::INT AS txn_count,
    -- the month's turnover follows wealth and is shared out over the expected count, so star
    -- points from transactions do not grow with txns_per_customer_month
    least(60000, greatest(20, wealth * 0.01 * asset_factor)) / greatest(1, $txns_per_customer_month * activity)
        AS txn_scale
FROM factored
"""

BALANCES_SQL = """
WITH days AS (
    SELECT d::DATE AS balance_date, datediff('day', DATE '1970-01-01', d::DATE) AS day_key
    FROM generate_series($month_start, $month_end, INTERVAL 1 DAY) AS t(d)
), account_days AS (
    SELECT a.*, days.*, m.asset_factor
    FROM accounts AS a
    JOIN month_customers AS m USING (cust_num)
    CROSS JOIN days
    WHERE (a.open_date IS NULL OR a.open_date <= days.balance_date)
      AND (a.close_date IS NULL OR days.balance_date < a.close_date)
      AND (a.kind <> 'card' OR day(days.balance_date) <= 20)
), valued AS (
    SELECT *,
        (level * CASE kind
            WHEN 'loan' THEN 1 - 0.005 * $month_index
            WHEN 'monthly' THEN asset_factor
            ELSE asset_factor * (0.85 + 0.3 * unit(account_key, day_key, 'wiggle'))
        END)::DECIMAL(18, 2) AS balance
    FROM account_days
)
SELECT account_id, customer_id, product_code, balance_date, balance, currency,
    CASE
        WHEN kind <> 'loan' THEN NULL
        WHEN balance_date >= loss_from AND (loss_until IS NULL OR balance_date < loss_until) THEN 'loss'
        WHEN substandard THEN 'substandard'
        ELSE 'normal'
    END AS risk_class
FROM valued
WHERE balance > 0  -- sparse: a zero day has no row
ORDER BY cust_num, slot, balance_date
"""

TRANSACTIONS_SQL = f"""
WITH numbered AS (
    SELECT *, unnest(range(txn_count)) AS seq FROM month_customers WHERE txn_count > 0
), drawn AS (
    SELECT *,
        $month_index * 1000000 + seq AS txn_key,
        $month_start + floor(unit(cust_num, $month_index * 1000000 + seq, 'day') * $month_days)::INT AS txn_date,
        {_pick("unit(cust_num, $month_index * 1000000 + seq, 'type')", TXN_TYPE_MIX)} AS txn_type
    FROM numbered
), routed AS (
    SELECT *,
        CASE
            WHEN txn_type = 'card_pos' AND card_opened <= txn_date
                 AND (card_closed IS NULL OR txn_date < card_closed) THEN {SLOT_CARD}
            WHEN txn_type IN ('remittance', 'fx_trade') AND fx_currency IS NOT NULL
                 AND unit(cust_num, txn_key, 'fx_route') < 0.6 THEN {SLOT_FX}
            ELSE {SLOT_DEMAND}
        END AS slot,
        CASE txn_type
            WHEN 'fee' THEN 1 + 49 * unit(cust_num, txn_key, 'amount')
            WHEN 'atm_local' THEN 100 * (1 + floor(20 * unit(cust_num, txn_key, 'amount')))
            ELSE txn_scale * {_lookup("txn_type", TXN_AMOUNT_MULTIPLIER, "1")}
                * log_uniform(unit(cust_num, txn_key, 'amount'), 0.2, 5.0)
        END AS amount_cny
    FROM drawn
), ordinary AS (
    SELECT
        cust_num, seq,
        'T' || strftime($month_start, '%Y%m') || '-' || customer_id[2:] || '-' || seq AS txn_id,
        customer_id || '-' || lpad(slot::VARCHAR, 2, '0') AS account_id,
        customer_id,
        txn_date,
        txn_type,
        greatest(0.01, CASE WHEN slot = {SLOT_FX}
            THEN amount_cny / {_lookup("fx_currency", FX_APPROX)}
            ELSE amount_cny END)::DECIMAL(18, 2) AS amount,
        CASE WHEN slot = {SLOT_FX} THEN fx_currency ELSE 'CNY' END AS currency,
        CASE WHEN txn_type = 'card_pos'
            THEN {MERCHANT_CATEGORIES!r}[1 + floor(unit(cust_num, txn_key, 'mcc') * {len(MERCHANT_CATEGORIES)})::INT]
        END AS merchant_category,
        CASE WHEN txn_type IN ('remittance', 'remote_cash') THEN
            CASE WHEN unit(cust_num, txn_key, 'fee_factor') < 0.15 THEN 0.8
                 WHEN unit(cust_num, txn_key, 'fee_factor') < 0.22 THEN 0.5 END
        END::DECIMAL(3, 2) AS fee_factor
    FROM routed
), installments AS (
    -- at most one installment plan a month, on the card, more often and larger for heavy card users
    SELECT cust_num, -1 AS seq,
        'I' || strftime($month_start, '%Y%m') || '-' || customer_id[2:] AS txn_id,
        customer_id || '-' || lpad({SLOT_CARD}::VARCHAR, 2, '0') AS account_id,
        customer_id,
        $month_start + floor(unit(cust_num, $month_index, 'installment_day') * $month_days)::INT AS txn_date,
        'card_installment' AS txn_type,
        log_uniform(0.5 * card_activity + 0.5 * unit(cust_num, $month_index, 'installment_amount'),
            {", ".join(map(str, INSTALLMENT_AMOUNT_RANGE))})::DECIMAL(18, 2) AS amount,
        'CNY' AS currency,
        NULL::VARCHAR AS merchant_category,
        NULL::DECIMAL(3, 2) AS fee_factor,
        card_opened, card_closed
    FROM month_customers
    WHERE card_product IS NOT NULL
      AND unit(cust_num, $month_index, 'installment')
          < {INSTALLMENT_CHANCE_RANGE[0]} + {INSTALLMENT_CHANCE_RANGE[1] - INSTALLMENT_CHANCE_RANGE[0]} * card_activity
)
SELECT txn_id, account_id, customer_id, txn_date, txn_type, amount, currency, merchant_category, fee_factor
FROM (
    SELECT * FROM ordinary
    UNION ALL
    SELECT * EXCLUDE (card_opened, card_closed) FROM installments
    WHERE card_opened <= txn_date AND (card_closed IS NULL OR txn_date < card_closed)
)
ORDER BY txn_date, cust_num, seq
"""

# A card's reward points for the month (Guangfa's 积分): 1 to 3 entries while the card is held.
CARD_POINTS_SQL = f"""
WITH holders AS (
    SELECT cust_num, customer_id, card_opened, card_closed,
        1 + floor(unit(cust_num, $month_index, 'points_entries') * {POINTS_ENTRIES_MAX})::INT AS entries,
        log_uniform(0.7 * card_activity + 0.3 * unit(cust_num, $month_index, 'points_month'),
            {", ".join(map(str, MONTHLY_POINTS_RANGE))}) AS month_points
    FROM month_customers
    WHERE card_product IS NOT NULL
), entries AS (
    SELECT *, unnest(range(entries)) AS seq FROM holders
), dated AS (
    SELECT *,
        $month_start + floor(unit(cust_num, $month_index * 100 + seq, 'points_day') * $month_days)::INT
            AS posted_on
    FROM entries
)
SELECT
    'P' || strftime($month_start, '%Y%m') || '-' || customer_id[2:] || '-' || seq AS entry_id,
    customer_id,
    posted_on,
    -- whole points, at least 1; (0.5 + U) has mean 1, so the month's entries sum to month_points on average
    greatest(1, round(month_points / entries * (0.5 + unit(cust_num, $month_index * 100 + seq, 'points'))))::BIGINT
        AS points
FROM dated
WHERE card_opened <= posted_on AND (card_closed IS NULL OR posted_on < card_closed)
ORDER BY posted_on, cust_num, seq
"""

# A first score some time before the period, and for some a second one during it.
CREDIT_SCORES_SQL = f"""
WITH scored AS (
    SELECT cust_num, customer_id,
        $period_start - (30 + floor(unit(customer_id, 0, 'scored_before') * 365))::INT AS first_scored_on,
        (380 + floor(470 * pow(unit(customer_id, 0, 'score'), 0.6)))::INT AS first_score,
        unit(customer_id, 0, 'rescored') < {RESCORED_SHARE} AS rescored
    FROM customers
    WHERE card_product IS NOT NULL AND unit(customer_id, 0, 'scored') < {SCORED_SHARE}
)
SELECT customer_id, scored_on, score FROM (
    SELECT cust_num, customer_id, first_scored_on AS scored_on, first_score AS score FROM scored
    UNION ALL
    SELECT cust_num, customer_id,
        $period_start + floor(unit(customer_id, 0, 'rescored_on') * $period_days)::INT,
        least(850, greatest(300, first_score - 80 + floor(161 * unit(customer_id, 0, 'rescore'))))::INT
    FROM scored WHERE rescored
)
ORDER BY cust_num, scored_on
"""

CUSTOMERS_FILE_SQL = "SELECT customer_id, segment FROM customers ORDER BY cust_num"

PRODUCTS_SQL = """
SELECT customer_id, product_code, opened_on, closed_on FROM (
    SELECT cust_num, customer_id, card_product AS product_code, card_opened AS opened_on, card_closed AS closed_on
    FROM customers WHERE card_product IS NOT NULL
    UNION ALL
    SELECT cust_num, customer_id, perk_product, perk_opened, perk_closed
    FROM customers WHERE perk_product IS NOT NULL
)
ORDER BY cust_num, product_code
"""

CREDIT_EVENTS_SQL = """
SELECT customer_id, event_code, event_started AS started_on, event_cured AS cured_on
FROM customers WHERE event_code IS NOT NULL
ORDER BY cust_num
"""

# Business days from two weeks before the period, so every day of the period has an earlier rate.
FX_RATES_SQL = """
WITH days AS (
    SELECT d::DATE AS rate_date, datediff('day', DATE '1970-01-01', d::DATE) AS day_key
    FROM generate_series($period_start - 14, $period_end, INTERVAL 1 DAY) AS t(d)
    WHERE dayofweek(d) BETWEEN 1 AND 5
), quotes AS (
    SELECT rate_date, 'HKD' AS currency,
        0.92 + 0.008 * sin(day_key / 29.0 + $seed) + 0.002 * (unit(day_key, 0, 'HKD') - 0.5) AS rate
    FROM days
    UNION ALL
    SELECT rate_date, 'USD',
        7.20 + 0.08 * sin(day_key / 23.0 + $seed) + 0.02 * (unit(day_key, 0, 'USD') - 0.5)
    FROM days
)
SELECT rate_date, currency, rate::DECIMAL(18, 6) AS cny_per_unit
FROM quotes
ORDER BY rate_date, currency
"""


def _month_starts(first_month: str, months: int) -> list[date]:
    first = Month.parse(first_month)
    return [first.plus(i).first_day for i in range(months)]


def _month_end(month_start: date) -> date:
    return Month.of(month_start).last_day


def _connect(seed: int) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # The seed is an int, so writing it into the macro text is safe; macros cannot take bound parameters.
    # hash() of several values combines them weakly (draws with different salts came out correlated),
    # so the combined hash is hashed again; the top 53 bits make a double in [0, 1).
    con.execute(f"""
        CREATE MACRO unit(key_a, key_b, salt) AS
            (hash(hash({int(seed)}, key_a, key_b, salt)) >> 11)::DOUBLE / 9007199254740992.0
    """)
    con.execute("CREATE MACRO log_uniform(draw, low, high) AS low * pow(high / low, draw)")
    con.execute("""
        CREATE MACRO nth_month_start(period_start, month_index) AS
            (period_start + to_months(month_index))::DATE
    """)
    # A held product: opened long before the period (70%) or during it.
    con.execute("""
        CREATE MACRO held_since(key, salt, period_start, period_days) AS
            CASE WHEN unit(key, 1, salt) < 0.7
                 THEN period_start - (30 + floor(unit(key, 2, salt) * 3000))::INT
                 ELSE period_start + floor(unit(key, 2, salt) * period_days)::INT END
    """)
    # An end date for some (share) of starts, at least min_days later and only inside the period.
    con.execute("""
        CREATE MACRO ended_by(key, salt, share, started, min_days, period_start, period_days) AS
            CASE WHEN started IS NOT NULL AND unit(key, 3, salt) < share
                  AND greatest(started, period_start) + (min_days + floor(unit(key, 4, salt) * period_days))::INT
                      < period_start + period_days
                 THEN greatest(started, period_start) + (min_days + floor(unit(key, 4, salt) * period_days))::INT
            END
    """)
    return con


def _copy(con, query: str, path: Path, file_format: str, params: dict) -> int:
    (rows,) = con.execute(f"COPY ({query}) TO {path_literal(path)} {FORMATS[file_format]}", params).fetchone()
    return rows


def generate_landing(out_dir: Path, customers: int = 10_000, first_month: str = "2024-08", months: int = 17,
                     seed: int = 7, file_format: str = "csv", txns_per_customer_month: float = 3.0) -> dict:
    """Write a landing folder under `out_dir` and return row counts per file kind and the months.

    Files of the same names are overwritten and nothing else in `out_dir` is touched, so give a new or
    empty folder (a CSV and a Parquet landing in one folder would be ambiguous to a reader).
    """
    if file_format not in FORMATS:
        raise ValueError(f"file_format must be one of {sorted(FORMATS)}, not {file_format!r}")
    if customers < 1 or months < 1:
        raise ValueError("customers and months must be at least 1")
    out_dir = Path(out_dir)
    for monthly in ("balances", "transactions", "card_points"):
        (out_dir / monthly).mkdir(parents=True, exist_ok=True)
    month_starts = _month_starts(first_month, months)
    period_start, period_end = month_starts[0], _month_end(month_starts[-1])
    period = {"period_start": period_start, "period_days": (period_end - period_start).days + 1, "months": months}

    con = _connect(seed)
    con.execute(CUSTOMERS_SQL, {**period, "customers": customers, "id_width": max(7, len(str(customers)))})
    con.execute(ACCOUNTS_SQL, {"period_start": period_start})

    ext = file_format
    rows = {"balances": 0, "transactions": 0, "card_points": 0}
    for month_index, month_start in enumerate(month_starts):
        name = f"{month_start:%Y-%m}.{ext}"
        con.execute(MONTH_CUSTOMERS_SQL,
                    {"month_index": month_index, "txns_per_customer_month": txns_per_customer_month})
        rows["balances"] += _copy(con, BALANCES_SQL, out_dir / "balances" / name, file_format, {
            "month_index": month_index, "month_start": month_start, "month_end": _month_end(month_start)})
        in_month = {"month_index": month_index, "month_start": month_start, "month_days": _month_end(month_start).day}
        rows["transactions"] += _copy(con, TRANSACTIONS_SQL, out_dir / "transactions" / name, file_format, in_month)
        rows["card_points"] += _copy(con, CARD_POINTS_SQL, out_dir / "card_points" / name, file_format, in_month)

    rows["customers"] = _copy(con, CUSTOMERS_FILE_SQL, out_dir / f"customers.{ext}", file_format, {})
    rows["products"] = _copy(con, PRODUCTS_SQL, out_dir / f"products.{ext}", file_format, {})
    rows["credit_events"] = _copy(con, CREDIT_EVENTS_SQL, out_dir / f"credit_events.{ext}", file_format, {})
    rows["credit_scores"] = _copy(con, CREDIT_SCORES_SQL, out_dir / f"credit_scores.{ext}", file_format, {
        "period_start": period_start, "period_days": period["period_days"]})
    rows["fx_rates"] = _copy(con, FX_RATES_SQL, out_dir / f"fx_rates.{ext}", file_format, {
        "period_start": period_start, "period_end": period_end, "seed": seed})
    con.close()
    return {"out_dir": str(out_dir), "format": file_format,
            "months": [f"{m:%Y-%m}" for m in month_starts], "rows": rows}


def build_parser() -> argparse.ArgumentParser:
    # ArgumentDefaultsHelpFormatter: every flag's help ends with its default, so --help is the reference.
    parser = argparse.ArgumentParser(
        prog="python -m data.generator", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Write a synthetic landing folder for tiers (data-contract.md section 1): the customers, "
                    "products, credit_events, credit_scores and fx_rates files, and balances/, transactions/ and "
                    "card_points/ with one file a month. The same arguments give byte-identical files.",
        epilog="Prints a JSON summary (the months written and the rows per file kind) when done.")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", default=argparse.SUPPRESS,
                        help="landing folder to write (required; created if missing); files of the same names are "
                             "overwritten, so give a new or empty folder")
    parser.add_argument("--customers", type=int, default=10_000, metavar="N", help="synthetic customers")
    parser.add_argument("--first-month", default="2024-08", metavar="YYYY-MM", help="the first month of data")
    parser.add_argument("--months", type=int, default=17, metavar="N",
                        help="months of balances, transactions and card points from --first-month (an evaluation "
                             "at a month-end needs its window's months before it: 6 for icbc_star, 12 for boc_vip "
                             "and cgb_card_star)")
    parser.add_argument("--seed", type=int, default=7, help="the seed of every random draw")
    parser.add_argument("--format", dest="file_format", choices=sorted(FORMATS), default="csv",
                        help="the landing files' format")
    parser.add_argument("--txns-per-customer-month", type=float, default=3.0, metavar="N",
                        help="average transactions per active customer and month")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    summary = generate_landing(args.out, customers=args.customers, first_month=args.first_month,
                               months=args.months, seed=args.seed, file_format=args.file_format,
                               txns_per_customer_month=args.txns_per_customer_month)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
