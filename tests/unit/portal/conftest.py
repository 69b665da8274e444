"""Fixtures of the portal's unit tests (fakes in ``fakes.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.domain.catalog import Catalog, load_catalog
from gateway.screening.measures import MeasuresCatalog, load_measures
from tests.unit.portal.fakes import Portal, make_portal


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def measures(catalog: Catalog) -> MeasuresCatalog:
    return load_measures(catalog=catalog)


@pytest.fixture
def portal(catalog: Catalog) -> Iterator[Portal]:
    p = make_portal(catalog)
    with p.client:
        yield p
