"""Offline verification of a whole audit log, for auditors.

:func:`verify_log` reads every entry and checkpoint of a
:class:`~gateway.audit.store.LogReader` and checks, in one pass:

* indexes are contiguous from 0 and each record's own ``seq`` equals its index;
* each record is canonical JSON and its RFC 6962 leaf hash matches the stored one;
* every checkpoint is signed by a trusted key, names the log's origin, never
  shrinks, and its root equals the root recomputed from the entries; successive
  checkpoints are linked by a verified consistency proof;
* optionally, a checkpoint kept from earlier is consistent with the log now
  (this is what catches a log truncated, or rewritten, after it was seen);
* every entry is covered by a signed checkpoint. Entries after the last one
  (the unsigned tail) are vouched for by nobody: a forged record appended to
  a copy, or a copy whose last checkpoints were deleted, looks exactly like
  them. They fail verification unless ``allow_unsigned_tail``, and even then
  they are reported apart and never counted as verified.

The first problem raises :class:`~gateway.audit.errors.LogIntegrityError`
naming the first bad index.

>>> from gateway.audit.store import MemoryStore
>>> report = verify_log(MemoryStore(), [], allow_empty=True)
>>> report.size
0
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.checkpoint import Checkpoint, open_checkpoint
from gateway.audit.errors import LogIntegrityError, NoteError, ProofError, RecordError
from gateway.audit.merkle import EMPTY_ROOT, MerkleTree, leaf_hash, verify_consistency
from gateway.audit.note import Verifier
from gateway.audit.records import decode_record
from gateway.audit.store import LogReader, StoredCheckpoint

__all__ = ["MAX_WORKERS", "PARALLEL_FROM", "VerifyReport", "iter_records", "verify_log"]

#: Entries per unit of work: large enough that handing it to another process
#: costs little beside parsing it, small enough to keep memory flat.
CHUNK = 2_000
#: Logs shorter than this are verified in this process alone: starting worker
#: processes (a fresh interpreter each) costs more than it saves below it.
PARALLEL_FROM = 50_000
#: At most this many worker processes, whatever the machine.
MAX_WORKERS = 8


@dataclass
class VerifyReport:
    """What a successful verification established."""

    origin: str | None
    size: int
    checkpoints: int
    latest: Checkpoint | None
    #: Entries at and above this index are stored but not covered by a signed
    #: checkpoint (the unsigned tail); they are not verified.
    verified_size: int
    warnings: list[str] = field(default_factory=list)
    tree: MerkleTree = field(default_factory=MerkleTree, repr=False)

    @property
    def unsigned(self) -> int:
        """Number of entries after the last signed checkpoint (not verified)."""
        return self.size - self.verified_size


def _open_all(
    stored: Sequence[StoredCheckpoint], verifiers: Sequence[Verifier], origin: str | None
) -> list[tuple[StoredCheckpoint, Checkpoint]]:
    """Verify the signature of every checkpoint, in storage order."""
    out: list[tuple[StoredCheckpoint, Checkpoint]] = []
    trusted_size = 0
    for row in stored:
        try:
            cp = open_checkpoint(row.note, verifiers, origin=origin)
        except NoteError as err:
            # The entries this checkpoint would vouch for are the ones in doubt.
            first = trusted_size if row.size > trusted_size else max(row.size - 1, 0)
            raise LogIntegrityError(
                f"checkpoint #{row.seq} (size {row.size}) is not acceptable: {err}", index=first
            ) from None
        if origin is None:
            origin = cp.origin
        if cp.size < trusted_size:
            raise LogIntegrityError(
                f"checkpoint #{row.seq} goes back from size {trusted_size} to {cp.size}",
                index=cp.size,
            )
        trusted_size = cp.size
        out.append((row, cp))
    return out


def verify_log(
    reader: LogReader,
    verifiers: Sequence[Verifier],
    *,
    kept: str | None = None,
    allow_empty: bool = False,
    strict: bool = False,
    allow_unsigned_tail: bool = False,
    on_record: Callable[[int, dict[str, Any]], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> VerifyReport:
    """Verify every entry and checkpoint of the log in ``reader``.

    ``kept`` is a signed checkpoint note saved earlier (by an auditor, a
    receipt or a witness); the log must still contain and agree with it.
    ``strict`` also checks that each record is byte-for-byte canonical JSON.
    ``allow_unsigned_tail`` accepts entries after the last signed checkpoint
    (a live log's last second, a crashed log not yet reopened): they are
    counted in :attr:`VerifyReport.unsigned` and a warning, never as verified.
    ``on_record`` is called with each record that is well formed and in its
    place; records at or above the returned ``verified_size`` are not covered
    by a signature, so a caller listing records must leave those out.
    ``on_progress(done, total)`` is called after each chunk of entries (counts
    of entries). ``workers`` is how many processes parse and hash records on a
    log of at least :data:`PARALLEL_FROM` entries (default: one per CPU, at most
    :data:`MAX_WORKERS`; 1 = this process only); the tree, the checkpoints and
    every check stay in this process, in log order, so the outcome and the
    first bad index reported are the same whatever the count.
    Raises LogIntegrityError on the first problem (an unsigned tail is one,
    unless allowed), and StorageError if the log cannot be read.
    """
    origin = reader.origin()
    checkpoints = _open_all(reader.checkpoints(), verifiers, origin)
    if not checkpoints and not allow_empty:
        raise LogIntegrityError("the log has no checkpoint at all", index=0)
    if origin is None and checkpoints:
        origin = checkpoints[0][1].origin
    tree = MerkleTree()
    pending = iter(checkpoints)
    nxt = next(pending, None)
    prev: Checkpoint | None = None

    def settle() -> None:
        """Check every checkpoint whose size the tree has now reached."""
        nonlocal nxt, prev
        while nxt is not None and nxt[1].size == tree.size:
            row, cp = nxt
            first_bad = prev.size if prev is not None else 0
            if tree.root() != cp.root_hash:
                where = f"somewhere in indexes {first_bad}..{cp.size - 1}" if cp.size else ""
                raise LogIntegrityError(
                    f"entries differ from signed checkpoint #{row.seq} (size {cp.size}) {where}",
                    index=first_bad,
                )
            if prev is not None and prev.size > 0:
                try:
                    proof = tree.consistency_proof(prev.size, cp.size)
                    verify_consistency(prev.size, cp.size, proof, prev.root_hash, cp.root_hash)
                except ProofError as err:
                    raise LogIntegrityError(
                        f"checkpoint #{row.seq} is not consistent with the one before: {err}",
                        index=first_bad,
                    ) from None
            prev = cp
            nxt = next(pending, None)

    settle()
    total = reader.size()
    done = 0
    for start, hashes, records, bad in _checked_chunks(
        reader, strict=strict, want_records=on_record is not None, workers=_workers(workers, total)
    ):
        for offset, h in enumerate(hashes):
            tree.append(h)
            if nxt is not None and nxt[1].size == tree.size:
                settle()
            if on_record is not None and records is not None:
                on_record(start + offset, records[offset])
        if bad is not None:
            raise bad
        done = start + len(hashes)
        if on_progress is not None:
            on_progress(done, max(total, done))
    if nxt is not None:
        row, cp = nxt
        raise LogIntegrityError(
            f"entry is missing: the log ends at {tree.size} entries, but signed checkpoint "
            f"#{row.seq} covers {cp.size} (log truncated)",
            index=tree.size,
        )
    verified = prev.size if prev is not None else 0
    report = VerifyReport(origin, tree.size, len(checkpoints), prev, verified, tree=tree)
    if kept is not None:
        _check_kept(kept, verifiers, origin, report)
    if report.unsigned:
        what = (
            f"{report.unsigned} entries ({verified}..{tree.size - 1}) are not covered by a "
            f"signed checkpoint: nobody vouches for them"
        )
        if not allow_unsigned_tail:
            raise LogIntegrityError(what, index=verified)
        report.warnings.append(what)
    return report


def _check_kept(
    kept: str, verifiers: Sequence[Verifier], origin: str | None, report: VerifyReport
) -> None:
    try:
        cp = open_checkpoint(kept, verifiers, origin=origin)
    except NoteError as err:
        raise LogIntegrityError(f"the kept checkpoint is not acceptable: {err}") from None
    tree = report.tree
    if cp.size > tree.size:
        raise LogIntegrityError(
            f"entry is missing: the log has {tree.size} entries but the kept checkpoint "
            f"covers {cp.size} (log truncated)",
            index=tree.size,
        )
    root = tree.root(cp.size) if cp.size else EMPTY_ROOT
    if root != cp.root_hash:
        raise LogIntegrityError(
            f"the log was rewritten: it disagrees with the kept checkpoint (size {cp.size}) "
            f"somewhere in indexes 0..{cp.size - 1}",
            index=0,
        )
    latest = report.latest
    if latest is not None and 0 < cp.size <= latest.size:
        try:
            proof = tree.consistency_proof(cp.size, latest.size)
            verify_consistency(cp.size, latest.size, proof, cp.root_hash, latest.root_hash)
        except ProofError as err:
            raise LogIntegrityError(f"kept checkpoint is not consistent: {err}") from None


def iter_records(reader: LogReader) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, record) for every decodable record, WITHOUT verification: nothing
    it yields may be shown as verified (use :func:`verify_log` with ``on_record``
    and keep indexes below ``verified_size``)."""
    for entry in reader.iter_entries():
        try:
            yield entry.index, decode_record(entry.leaf)
        except RecordError:
            continue


#: (start index, leaf hashes of the good entries, their records or None, the
#: failure at the first bad entry or None): the good entries before a failure
#: still count, so the failure reported first is the same as one by one.
_Checked = tuple[int, list[bytes], list[dict[str, Any]] | None, LogIntegrityError | None]


def _workers(asked: int | None, total: int) -> int:
    if asked is not None:
        return max(1, asked)
    if total < PARALLEL_FROM:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def _check_chunk(
    start: int,
    leaves: list[bytes],
    stored: list[bytes | None],
    strict: bool,
    want_records: bool,
) -> _Checked:
    """Hash and parse one run of consecutive entries from index ``start``.

    Returns a :data:`_Checked` tuple; the entries after the first bad one are
    not looked at. Runs in worker processes, hence a module-level function of
    picklable arguments."""
    hashes: list[bytes] = []
    records: list[dict[str, Any]] | None = [] if want_records else None
    for offset, leaf in enumerate(leaves):
        index = start + offset
        h = leaf_hash(leaf)
        lh = stored[offset]
        if lh is not None and lh != h:
            bad = LogIntegrityError("record bytes do not match the stored leaf hash", index=index)
            return start, hashes, records, bad
        try:
            record = decode_record(leaf, canonical=strict)
        except RecordError as err:
            return (
                start,
                hashes,
                records,
                LogIntegrityError(f"record is malformed: {err}", index=index),
            )
        if record["seq"] != index:
            return (
                start,
                hashes,
                records,
                LogIntegrityError(
                    f"record says seq {record['seq']}: moved, copied, "
                    "or a record before it is gone",
                    index=index,
                ),
            )
        hashes.append(h)
        if records is not None:
            records.append(record)
    return start, hashes, records, None


def _raw_chunks(reader: LogReader) -> Iterator[tuple[int, list[bytes], list[bytes | None]]]:
    """Consecutive runs of at most :data:`CHUNK` entries; a gap in the stored
    indexes raises LogIntegrityError at the first missing index."""
    leaves: list[bytes] = []
    stored: list[bytes | None] = []
    start = 0
    for expected, entry in enumerate(reader.iter_entries()):
        if entry.index != expected:
            if leaves:
                yield start, leaves, stored
            raise LogIntegrityError(
                f"entry is missing (the next stored index is {entry.index})", index=expected
            )
        leaves.append(entry.leaf)
        stored.append(entry.leaf_hash)
        if len(leaves) == CHUNK:
            yield start, leaves, stored
            start, leaves, stored = expected + 1, [], []
    if leaves:
        yield start, leaves, stored


def _checked_chunks(
    reader: LogReader, *, strict: bool, want_records: bool, workers: int
) -> Iterator[_Checked]:
    """The checked chunks, in log order.

    With ``workers`` > 1, chunk ``i`` goes to worker ``i mod workers``, one chunk
    in flight per worker (memory stays flat), and results are taken in chunk
    order, so the first failure reported is the first in the log. The workers
    are fresh interpreters running :func:`_serve_chunks` over pipes (pickle
    frames), not :mod:`multiprocessing`: that re-imports the caller's main
    module in each worker (failing in scripts without a ``__main__`` guard), and
    forking a gateway process, which has threads, is unsafe."""
    if workers <= 1:
        for start, leaves, stored in _raw_chunks(reader):
            yield _check_chunk(start, leaves, stored, strict, want_records)
        return
    procs = [_start_worker() for _ in range(workers)]
    inflight: deque[subprocess.Popen[bytes]] = deque()
    gap: LogIntegrityError | None = None
    try:
        chunks = _raw_chunks(reader)
        while True:
            try:
                start, leaves, stored = next(chunks)
            except StopIteration:
                break
            except LogIntegrityError as err:
                gap = err  # reported after every chunk before it
                break
            if len(inflight) == workers:
                yield _result(inflight.popleft())
            proc = procs[(start // CHUNK) % workers]
            assert proc.stdin is not None
            pickle.dump((start, leaves, stored, strict, want_records), proc.stdin, protocol=5)
            proc.stdin.flush()
            inflight.append(proc)
        while inflight:
            yield _result(inflight.popleft())
    finally:
        for proc in procs:
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    if gap is not None:
        raise gap


def _start_worker() -> subprocess.Popen[bytes]:
    code = "from gateway.audit.verify import _serve_chunks; _serve_chunks()"
    env = dict(os.environ)
    # The worker imports this package from wherever this process did.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )


def _result(proc: subprocess.Popen[bytes]) -> _Checked:
    assert proc.stdout is not None
    try:
        # Our own child over a private pipe; the log's bytes travel inside as bytes.
        result: _Checked = pickle.load(proc.stdout)  # noqa: S301
    except (EOFError, pickle.UnpicklingError) as err:
        raise OSError(f"a verification worker process failed ({err})") from None
    return result


def _serve_chunks() -> None:
    """A worker's loop: read pickled chunks on standard input, write each
    :func:`_check_chunk` result on standard output, until end of input. Only
    the parent verify process talks to it, over private pipes."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            args = pickle.load(inp)  # noqa: S301 - only the parent writes here
        except EOFError:
            return
        pickle.dump(_check_chunk(*args), out, protocol=5)
        out.flush()
