-- W1 as an analyst would write it directly in DuckDB: one pass over the Parquet events, the
-- ten rules as CASE expressions, stop_after_match as a first-match CASE (the three category
-- multipliers stop every later rule), amounts as DECIMAL rounded half away from zero (DuckDB's
-- ROUND on DECIMAL), balances per member committed to a table.
--
-- No ledger, no idempotency, no entries/postings, no audit trail: this is the floor the engine
-- is compared with (performance.md: "no slower than 1.5x, while doing full semantics").
-- Parameter: the `events` variable, a Parquet path or glob (SET VARIABLE events = '...').
SET TimeZone = 'UTC';

CREATE OR REPLACE TABLE hand_w1_balances AS
WITH ev AS (
    SELECT
        external_id,
        event_timestamp AS ts,
        event_data.type AS type,
        CAST(event_data.amount AS DECIMAL(18, 2)) AS amount,
        event_data.category AS category,
        event_data.channel AS channel,
        event_data.rating AS rating
    FROM read_parquet(getvariable('events'))
),
points AS (
    SELECT
        external_id,
        CASE
            -- first match wins and stops the later rules (stop_after_match)
            WHEN type = 'purchase' AND category = 'electronics' THEN ROUND(amount * 3, 0)
            WHEN type = 'purchase' AND category IN ('grocery', 'pharmacy') THEN ROUND(amount * 2, 0)
            WHEN type = 'purchase' AND category = 'fuel' THEN ROUND(amount * 0.5, 0)
            ELSE
                  CASE WHEN type = 'purchase' THEN ROUND(amount, 0) ELSE 0 END                      -- base_points
                + CASE WHEN type = 'purchase' AND amount >= 150 THEN 100 ELSE 0 END                 -- big_basket
                + CASE WHEN type = 'purchase' AND dayofweek(ts) IN (0, 6) THEN 20 ELSE 0 END        -- weekend_bonus
                + CASE WHEN type = 'purchase' AND channel = 'app'
                        AND ts >= TIMESTAMPTZ '2025-06-01 00:00:00+00'
                        AND ts <  TIMESTAMPTZ '2025-09-01 00:00:00+00' THEN 50 ELSE 0 END          -- summer_app_promo
                + CASE WHEN type = 'purchase'
                        AND ts >= TIMESTAMPTZ '2025-11-28 00:00:00+00'
                        AND ts <  TIMESTAMPTZ '2025-12-01 00:00:00+00'
                       THEN ROUND(amount * 1.5, 0) ELSE 0 END                                        -- black_friday
                + CASE WHEN type = 'review' AND rating >= 4 THEN 10 ELSE 0 END                      -- good_review
                - CASE WHEN type = 'refund' THEN ROUND(amount, 0) ELSE 0 END                        -- refund_clawback
        END AS points
    FROM ev
)
SELECT external_id, CAST(SUM(points) AS DECIMAL(38, 0)) AS balance
FROM points
GROUP BY external_id;
