"""Two deciders compiling at once in two threads: a policy activation compiles
the new version on a worker thread while queries compile decisions of the
active one on the event loop. pycasbin parses its matcher with ``ast.parse``,
whose recursion-depth state CPython 3.11 keeps per interpreter; without one
lock around the engine, a run of the hot-switch load test failed with
``SystemError: AST constructor recursion depth mismatch`` (answered INTERNAL)."""

from __future__ import annotations

import sys
import threading

from gateway.domain.catalog import Catalog
from gateway.policy import build_decider
from tests.unit.policy.conftest import FactsMaker


def test_deciders_compiling_in_two_threads_never_trip_the_parser(
    catalog: Catalog, facts: FactsMaker
) -> None:
    cases = [
        ("procurement", "government_procurement", "enterprise"),
        ("bank", "lending", "person"),
        ("court", "supervision_inspection", "enterprise"),
    ]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def compile_many() -> None:
        try:
            start.wait()
            for _ in range(20):
                decider = build_decider(catalog)  # a fresh one: nothing cached
                for agency, purpose, subject in cases:
                    decider.decide(facts(agency, purpose, subject=subject))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=compile_many) for _ in range(2)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        sys.setswitchinterval(interval)
    assert [type(e).__name__ for e in errors] == []
