"""Joint reward and punishment screening (守信激励和失信惩戒, issue 15 item 1).

An agency asks whether a party is on the reward or punishment lists before it acts on it
(procurement, bidding, market access, funding, honours, public office, lending), and which
measures the scenario requires of it:

* :mod:`gateway.screening.measures`: the measures catalog (``policies/measures.toml``):
  lists, scenarios, list x scenario -> measures with legal source and binding or advisory;
* :mod:`gateway.screening.lists`: which list entries are in force on a day and the answer
  per list (approved credit repairs are dropped before, by the objection desk's marks);
* :mod:`gateway.screening.screener`: one screen (validate, decide, reserve, ask the
  keeping departments for public-tier fields only, read the lists, settle, record);
* :mod:`gateway.screening.stats`: counts per list, scenario and agency for a period, read
  from the signed audit log (``credit-gateway screening stats``).

The gRPC servicer is :mod:`gateway.api.screening`; the agencies' command is
``credit-query screen``.
"""

from gateway.screening.measures import ListDef, MeasureDef, MeasuresCatalog, load_measures
from gateway.screening.screener import Screener

__all__ = [
    "ListDef",
    "MeasureDef",
    "MeasuresCatalog",
    "Screener",
    "load_measures",
]
