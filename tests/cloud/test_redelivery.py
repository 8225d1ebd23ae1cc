"""When the cloud publishes the current model again (cloud/redelivery.py): for an online edge
that has lacked it for a while, a while after it went out, at most once per while."""

from __future__ import annotations

from fedstream.cloud.redelivery import Redelivery


def test_an_edge_lacking_the_version_for_the_wait_gets_it_again() -> None:
    """v3 published at t=100 with a 30 s wait: an edge reporting v2 since t=101 is due at
    t=131, not before; right after the republish at t=131 it is not, until t=161."""
    # Prepare
    redelivery = Redelivery(30.0)
    redelivery.published(3, now=100.0)

    # Execute
    first = redelivery.due(edge_id="e", online=True, held=2, now=101.0)
    early = redelivery.due(edge_id="e", online=True, held=2, now=130.0)
    late = redelivery.due(edge_id="e", online=True, held=2, now=131.0)
    redelivery.published(3, now=131.0)
    again = redelivery.due(edge_id="e", online=True, held=None, now=140.0)
    later = redelivery.due(edge_id="e", online=True, held=None, now=161.0)

    # Assert
    assert (first, early, late, again, later) == (False, False, True, False, True)


def test_a_new_edge_that_takes_the_version_at_once_never_triggers_it() -> None:
    """A new edge's first status (sent before the model arrives) says none; its next says it
    holds the version: nothing is published again, however old the version is."""
    # Prepare
    redelivery = Redelivery(30.0)
    redelivery.published(3, now=0.0)

    # Execute
    answers = [redelivery.due(edge_id="new", online=True, held=None, now=1000.0),
               redelivery.due(edge_id="new", online=True, held=3, now=1000.2),
               redelivery.due(edge_id="new", online=True, held=3, now=1060.0)]

    # Assert
    assert answers == [False, False, False]


def test_edges_holding_it_offline_ones_and_a_wait_of_zero_never_trigger_it() -> None:
    """An edge holding the version (or a newer one), an offline edge (its wait starts over
    when it is back), no version published yet, and `after_s` 0 (off): never due."""
    # Prepare
    on, off, fresh = Redelivery(30.0), Redelivery(0.0), Redelivery(30.0)
    on.published(3, now=0.0)
    off.published(3, now=0.0)
    on.due(edge_id="gone", online=True, held=None, now=100.0)

    # Execute
    answers = [on.due(edge_id="a", online=True, held=3, now=1e6),
               on.due(edge_id="b", online=True, held=4, now=1e6),
               on.due(edge_id="gone", online=False, held=None, now=200.0),
               on.due(edge_id="gone", online=True, held=None, now=201.0),
               off.due(edge_id="c", online=True, held=None, now=1e6),
               fresh.due(edge_id="d", online=True, held=None, now=1e6)]

    # Assert
    assert answers == [False] * 6
