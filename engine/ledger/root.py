"""A batch's root hash, fed chunk by chunk: what the writer stores and `perkflow verify` recomputes.

root = sha256(previous batch's root || '#' || the batch's entries in seq order, joined by ';')
(the first batch's previous root is ''), each entry as `seq:entry_hash` (hash version 3: the entry
hash leaves out the seq, the root covers it; sql/hash.sql) or, in a batch of an earlier version,
its hash alone. Neither side ever holds a whole batch's hashes: the writer feeds each chunk it
writes, verify each chunk of entries it streams from the ledger.
"""

from __future__ import annotations

import hashlib

import polars as pl
import pyarrow as pa


class BatchRoot:
    def __init__(self, prev_root: str):
        self._sha = hashlib.sha256(f"{prev_root}#".encode())
        self.entries = 0  # hashes fed so far

    def add(self, hashes: pa.Array | pa.ChunkedArray) -> None:
        """The next entries of the batch as the root covers them, in seq order (a string array
        without nulls: `entry_hash` is NOT NULL; string, large_string or string_view, in one chunk
        or several)."""
        if len(hashes) == 0:
            return
        # One string of the hashes joined by ';', built by Polars rather than a Python loop over
        # the values. Not pyarrow.compute's binary_join: importing pyarrow.compute builds a
        # wrapper for each of its hundreds of kernels, ~55 ms CPU of every `perkflow run`; for
        # that reason too the hashes go to Polars as a table (`pl.from_arrow` of an array
        # imports it).
        joined = pl.from_arrow(pa.table({"h": hashes}))["h"].str.join(";")[0]
        self._sha.update(((";" if self.entries else "") + joined).encode())
        self.entries += len(hashes)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()
