"""Verification of the audit chain: every row against its predecessor, the head, and the anchors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from audit.anchors import Anchor, read_anchors
from audit.chain import record_hash
from audit.models import GENESIS_HASH, AuditHead, AuditRecord


@dataclass(frozen=True)
class Break:
    """The first place the chain is broken: the record (or anchor) and what is wrong with it."""

    seq: int | None
    record_id: int | None
    problem: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else "chain"
        if self.record_id is not None:
            where += f" (id {self.record_id})"
        return f"{where}: {self.problem}"


@dataclass
class Result:
    """What verification found: the number of records, the head and the first break, if any."""

    count: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    anchors_checked: int = 0
    first_break: Break | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no break was found."""
        return self.first_break is None


def _check_rows(result: Result) -> dict[int, str]:
    """Walk the rows in sequence order; return seq → hash of the rows walked before the first break."""
    hashes: dict[int, str] = {}
    prev_seq, prev_hash = 0, GENESIS_HASH
    rows = AuditRecord.objects.order_by("seq", "id").iterator(chunk_size=2000)
    for record in rows:
        result.count += 1
        problem = None
        if record.seq == prev_seq:
            problem = f"duplicate sequence number {record.seq} (a record was inserted)"
        elif record.seq != prev_seq + 1:
            missing = f"{prev_seq + 1}" if record.seq == prev_seq + 2 else f"{prev_seq + 1}–{record.seq - 1}"
            problem = f"record(s) {missing} missing before this one (deleted or renumbered)"
        elif record.prev_hash != prev_hash:
            problem = (
                f"prev_hash {record.prev_hash[:16]}… does not match the hash of record {prev_seq} "
                f"({prev_hash[:16]}…): a record was inserted, deleted or reordered"
            )
        else:
            try:
                expected = record_hash(record)
            except (ValueError, TypeError) as exc:
                expected = f"(cannot be computed: {exc})"
            if expected != record.hash:
                problem = "hash does not match the record's contents: the record was edited"
        if problem is not None:
            result.first_break = Break(record.seq, record.pk, problem)
            return hashes
        hashes[record.seq] = record.hash
        prev_seq, prev_hash = record.seq, record.hash
    result.head_seq, result.head_hash = prev_seq, prev_hash
    return hashes


def _head() -> tuple[int, str] | None:
    row = AuditHead.objects.filter(pk=1).values_list("seq", "hash").first()
    return (int(row[0]), str(row[1])) if row else None


def _check_head(result: Result, before: tuple[int, str] | None, after: tuple[int, str] | None) -> None:
    """The last record must be the head; the head is read before and after the walk (writers go on)."""
    if before is None or after is None:
        if result.count:
            result.notes.append("the chain head row is missing (it is rebuilt from the last record)")
        return
    last = result.head_seq
    if last < before[0]:
        result.first_break = Break(
            last + 1,
            None,
            f"the head says the chain reaches seq {before[0]}, but the last record is {last}: "
            "records at the end were deleted",
        )
    elif last > after[0]:
        result.first_break = Break(
            after[0] + 1, None, f"records after the head (seq {after[0]}) were added outside audit_record"
        )
    elif last in (before[0], after[0]) and result.head_hash != (before[1] if last == before[0] else after[1]):
        result.first_break = Break(last, None, "the head's hash differs from the last record's hash")


def _check_anchors(result: Result, anchors: list[Anchor], hashes: dict[int, str]) -> None:
    for anchor in anchors:
        result.anchors_checked += 1
        found = hashes.get(anchor.seq)
        if found is None:
            result.first_break = Break(
                anchor.seq,
                None,
                f"anchor {anchor.path.name} (anchored {anchor.anchored_at}) names record {anchor.seq}, "
                "which is no longer in the chain: the chain was truncated or rewritten",
            )
            return
        if found != anchor.hash:
            result.first_break = Break(
                anchor.seq,
                None,
                f"anchor {anchor.path.name} (anchored {anchor.anchored_at}) says record {anchor.seq} had "
                f"hash {anchor.hash[:16]}…, it now has {found[:16]}…: "
                "the chain was rewritten at or before it",
            )
            return


def verify_chain(*, anchors: bool = True, anchor_base: Path | str | None = None) -> Result:
    """Check every record, the head and (unless anchors=False) every anchor; stop at the first break."""
    result = Result()
    before = _head()
    hashes = _check_rows(result)
    if result.first_break is not None:
        return result
    _check_head(result, before, _head())
    if result.first_break is not None or not anchors:
        return result
    _check_anchors(result, read_anchors(anchor_base), hashes)
    return result
