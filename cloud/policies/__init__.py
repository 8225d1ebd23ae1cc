"""How rounds run: a sync round and an async (FedBuff) session, two policies behind one
interface (`base.RoundPolicy`), chosen by the round's mode."""

from fedstream.cloud.policies.base import Opening, RoundHost, RoundPolicy
from fedstream.cloud.policies.fedbuff import FedBuffSessions
from fedstream.cloud.policies.sync import SyncRounds

__all__ = ["FedBuffSessions", "Opening", "RoundHost", "RoundPolicy", "SyncRounds"]
