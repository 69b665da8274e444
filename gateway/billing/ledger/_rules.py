"""The ledger's rules that do not depend on a storage engine: argument checks, the
refusals' wording and metadata, the JSON form of priced lines, and the consistency
check folded from rows (:func:`find_discrepancies`).

Every backend (:mod:`gateway.stores.sqlite.ledger`, :mod:`gateway.stores.postgres.ledger`)
runs the same transactions, written once in :mod:`gateway.billing.ledger._engine`; what
they share beyond SQL lives here. Amounts are integer fen.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gateway.billing.ledger._types import (
    MAX_AMOUNT_FEN,
    AccountState,
    Balances,
    Discrepancy,
    Entry,
    PricedLine,
    ReserveSpec,
    entry_effect,
)
from gateway.errors import InsufficientBalanceError, InvalidArgumentError, QuotaExhaustedError
from gateway.pipeline.freetext import echo

__all__ = [
    "QUOTA_BASES",
    "Acct",
    "balance_error",
    "check_amount",
    "check_text",
    "dump_lines",
    "find_discrepancies",
    "fold_balances",
    "free_lines",
    "load_lines",
    "quota_error",
]

#: Bases that use a counted free unit (a daily quota, the yearly self-query allowance).
QUOTA_BASES = ("free_quota", "self_allowance")


def free_lines(lines: Sequence[PricedLine]) -> tuple[PricedLine, ...]:
    """``lines`` as a free unit books them: the same lines at 0 fen."""
    return tuple(PricedLine(x.department, x.dataset, 0) for x in lines)


def dump_lines(lines: Sequence[PricedLine]) -> str:
    """Priced lines as compact JSON ``[[department, dataset, fen], ...]``."""
    return json.dumps(
        [[x.department, x.dataset, x.amount_fen] for x in lines], separators=(",", ":")
    )


def load_lines(text: str) -> tuple[PricedLine, ...]:
    """The inverse of :func:`dump_lines`."""
    return tuple(PricedLine(str(d), str(s), int(a)) for d, s, a in json.loads(text))


@dataclass(slots=True)
class Acct:
    """An account row being changed inside one transaction (amounts in fen)."""

    account_id: str
    balance_fen: int
    held_fen: int
    credit_limit_fen: int

    def frozen(self) -> AccountState:
        """The row as an immutable :class:`AccountState`."""
        return AccountState(self.account_id, self.balance_fen, self.held_fen, self.credit_limit_fen)


def check_amount(amount_fen: object, field: str, *, signed: bool = False) -> int:
    """``amount_fen`` if it is an integer in 1..MAX_AMOUNT_FEN (``signed``: non-zero
    within ±MAX_AMOUNT_FEN). Raises InvalidArgumentError naming ``field``."""
    # bool is an int subclass and float is not money: refuse both.
    if isinstance(amount_fen, bool) or not isinstance(amount_fen, int):
        raise InvalidArgumentError(field, "must be an integer number of fen")
    if signed:
        if amount_fen == 0 or abs(amount_fen) > MAX_AMOUNT_FEN:
            raise InvalidArgumentError(field, f"must be non-zero and within ±{MAX_AMOUNT_FEN} fen")
    elif not 0 < amount_fen <= MAX_AMOUNT_FEN:
        raise InvalidArgumentError(field, f"must be between 1 and {MAX_AMOUNT_FEN} fen")
    return amount_fen


def check_text(value: str, field: str, *, max_len: int = 128) -> str:
    """``value`` if it is 1..``max_len`` printable characters. Raises InvalidArgumentError."""
    if not value or len(value) > max_len or not value.isprintable():
        raise InvalidArgumentError(field, f"must be 1 to {max_len} printable characters")
    return value


def check_available(acct: Acct, field: str) -> None:
    """Refuse a change that leaves ``acct`` with a negative available amount (balance
    minus holds plus credit): PostgreSQL's ``accounts`` CHECK would refuse it too, and
    both backends must say the same. Raises InvalidArgumentError (reason OVERDRAWN)."""
    if acct.frozen().available_fen < 0:
        raise InvalidArgumentError(
            field,
            "would leave the account below its credit limit (available below 0 fen)",
            reason="OVERDRAWN",
        )


def quota_error(spec: ReserveSpec) -> QuotaExhaustedError:
    """The refusal when ``spec`` needs a free unit and none is left (Art. 17 for the
    self-query allowance)."""
    if spec.basis == "self_allowance":
        message = (
            f"the {spec.quota_limit} free self-queries of {spec.period} are used"
            f" (Art. 17); query in paid mode, or again after {spec.resets_at}"
        )
    else:
        message = (
            f"the free-mode quota of {spec.quota_limit} queries a day is used up;"
            f" it resets at {spec.resets_at}"
        )
    return QuotaExhaustedError(
        message,
        metadata={"resets_at": spec.resets_at, "quota": str(spec.quota_limit), "basis": spec.basis},
    )


def balance_error(
    account_id: str, needed: int, available: int, missing: bool
) -> InsufficientBalanceError:
    """The refusal when an account (or no account) cannot cover ``needed`` fen."""
    what = (
        f"no account for {echo(account_id)}"
        if missing
        else f"account {echo(account_id)} has {available} fen available"
    )
    return InsufficientBalanceError(
        f"this query costs {needed} fen; {what}",
        metadata={
            "needed_fen": str(needed),
            "available_fen": str(available),
            "account": account_id,
        },
    )


def fold_balances(
    account_ids: Iterable[str], rows: Iterable[tuple[str, str, int]]
) -> dict[str, Balances]:
    """Every account's balance and held fen folded from ``(account, kind, amount)``
    entry rows in order (accounts without entries: 0/0), by account id."""
    folded: dict[str, list[int]] = {a: [0, 0] for a in account_ids}
    for acct_id, kind, amount in rows:
        d_balance, d_held = entry_effect(kind, amount)
        totals = folded.setdefault(acct_id, [0, 0])
        totals[0] += d_balance
        totals[1] += d_held
    return {a: Balances(b, h) for a, (b, h) in sorted(folded.items())}


def find_discrepancies(
    stored: Mapping[str, tuple[int, int]],
    entries: Iterable[Entry],
    held_open: Mapping[str, int],
    quota_counted: Mapping[tuple[str, str, str], int],
    quota_kept: Mapping[tuple[str, str, str], int],
) -> list[Discrepancy]:
    """What :meth:`LedgerStore.check` reports, from the rows it read in one snapshot:
    ``stored`` account -> (balance, held); every entry in order (each one's running
    totals are checked); account -> fen of its open reservations; the quota units
    counted from the requests and the kept counters (non-zero ones)."""
    problems: list[Discrepancy] = []
    running: dict[str, list[int]] = {}
    for e in entries:
        totals = running.setdefault(e.account_id, [0, 0])
        d_balance, d_held = entry_effect(e.kind, e.amount_fen)
        totals[0] += d_balance
        totals[1] += d_held
        if (e.balance_fen, e.held_fen) != tuple(totals):
            problems.append(
                Discrepancy(
                    e.account_id,
                    f"entry {e.seq}: records balance {e.balance_fen}/held {e.held_fen},"
                    f" entries sum to {totals[0]}/{totals[1]}",
                )
            )
        if totals[1] < 0:
            problems.append(Discrepancy(e.account_id, f"entry {e.seq}: held amount below zero"))
    if dict(quota_counted) != dict(quota_kept):
        problems.append(Discrepancy("", "quota counters disagree with the requests"))
    for acct_id in sorted(stored.keys() | running.keys()):
        have = stored.get(acct_id)
        want = tuple(running.get(acct_id, [0, 0]))
        if have is None:
            problems.append(Discrepancy(acct_id, "entries for an account that does not exist"))
        elif have != want:
            problems.append(
                Discrepancy(
                    acct_id,
                    f"stored balance {have[0]}/held {have[1]}, entries sum to {want[0]}/{want[1]}",
                )
            )
        if have is not None and have[1] != held_open.get(acct_id, 0):
            problems.append(
                Discrepancy(
                    acct_id,
                    f"held {have[1]} but open reservations total {held_open.get(acct_id, 0)}",
                )
            )
    return problems
