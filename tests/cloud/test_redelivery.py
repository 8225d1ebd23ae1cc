"""When the cloud publishes the current model again (cloud/redelivery.py): for an online edge
that still lacks it a while after it went out, at most once per while."""

from __future__ import annotations

from fedstream.cloud.redelivery import Redelivery


def test_an_edge_lacking_the_version_after_the_wait_gets_it_again() -> None:
    """v3 published at t=100 with a 30 s wait: an edge reporting v2 (or nothing) at t=131 is
    due; right after the republish at t=131, another is not, until t=161."""
    # Prepare
    redelivery = Redelivery(30.0)
    redelivery.published(3, now=100.0)

    # Execute
    early = redelivery.due(online=True, held=2, now=120.0)
    late, none = (redelivery.due(online=True, held=2, now=131.0),
                  redelivery.due(online=True, held=None, now=131.0))
    redelivery.published(3, now=131.0)
    again, later = (redelivery.due(online=True, held=None, now=140.0),
                    redelivery.due(online=True, held=None, now=161.0))

    # Assert
    assert (early, late, none, again, later) == (False, True, True, False, True)


def test_edges_holding_it_offline_ones_and_a_wait_of_zero_never_trigger_it() -> None:
    """An edge holding the version (or a newer one), an offline edge, no version published
    yet, and `after_s` 0 (off): never due."""
    # Prepare
    on, off, fresh = Redelivery(30.0), Redelivery(0.0), Redelivery(30.0)
    on.published(3, now=0.0)
    off.published(3, now=0.0)

    # Execute
    answers = [on.due(online=True, held=3, now=1e6), on.due(online=True, held=4, now=1e6),
               on.due(online=False, held=None, now=1e6),
               off.due(online=True, held=None, now=1e6),
               fresh.due(online=True, held=None, now=1e6)]

    # Assert
    assert answers == [False] * 5
