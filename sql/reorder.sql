-- Putting a large input in stream order (engine/io/reorder.py). $keys: a Parquet file of every
-- row's (kind, program, key, valid, arrival) with a known program and a key. A key's winner is
-- its first valid row to arrive (semantics.md 4); every other row of a repeated key, with its
-- winner's arrival. Grouped in DuckDB, which spills past its memory cap, so that the batch's
-- keys are never held in Python.

-- name: repeated_keys
WITH k AS (SELECT * FROM read_parquet($keys)),
     repeated AS (
         SELECT kind, program, key, min(arrival) FILTER (WHERE valid) AS winner
         FROM k GROUP BY kind, program, key
         HAVING count(*) > 1 AND winner IS NOT NULL)
SELECT k.arrival, r.winner
FROM k JOIN repeated r USING (kind, program, key)
WHERE k.arrival <> r.winner;
