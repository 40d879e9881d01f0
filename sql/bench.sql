-- The benchmark's checks (engine/bench.py): what it compares between workloads and baselines.

-- name: balances_hash
-- W2 against W3: one digest of every participant's available balance per asset.
SELECT md5(string_agg(external_id || ':' || asset_symbol || ':' || CAST(available AS VARCHAR), ','
                      ORDER BY external_id, asset_symbol))
FROM balances WHERE entity_type = 'PARTICIPANT';

-- name: w1_balances
-- W1 against the hand-written SQL (benchmarks/w1_hand.sql): participants' PTS balances.
SELECT external_id, CAST(available AS DECIMAL(38, 0)) AS balance
FROM balances WHERE entity_type = 'PARTICIPANT' AND asset_symbol = 'PTS';

-- name: hand_balances
SELECT external_id, balance FROM hand_w1_balances;
