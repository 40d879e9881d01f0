"""A batch's root hash, fed chunk by chunk: what the writer stores and `perkflow verify` recomputes.

root = sha256(previous batch's root || '#' || the batch's entry hashes in seq order, joined by ';')
(the first batch's previous root is ''). Neither side ever holds a whole batch's hashes: the
writer feeds each chunk it writes, verify each chunk of entries it streams from the ledger.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pyarrow.compute as pc


class BatchRoot:
    def __init__(self, prev_root: str):
        self._sha = hashlib.sha256(f"{prev_root}#".encode())
        self.entries = 0  # hashes fed so far

    def add(self, hashes: pa.Array | pa.ChunkedArray) -> None:
        """The next entry hashes of the batch, in seq order (a string array without nulls:
        `entry_hash` is NOT NULL)."""
        for chunk in hashes.chunks if isinstance(hashes, pa.ChunkedArray) else [hashes]:
            if len(chunk) == 0:
                continue
            if chunk.type != pa.string():  # large_string or string_view: binary_join takes list<string>
                chunk = chunk.cast(pa.string())
            # one string of the chunk's hashes joined by ';', built by Arrow rather than a
            # Python loop over the values
            joined = pc.binary_join(pa.ListArray.from_arrays(pa.array([0, len(chunk)], pa.int32()), chunk), ";")
            self._sha.update((";" if self.entries else "").encode() + joined[0].as_buffer().to_pybytes())
            self.entries += len(chunk)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()
