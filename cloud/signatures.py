"""Whether an update's signature lets it count: enrolled key, not revoked, signed over what
it claims, a sequence number not used before.

An enrolled edge's updates are always checked (stripping the signature does not get past:
`unsigned`); with `required`, so are everyone else's, and an edge without a key is refused
(`unenrolled`). Every refusal is a `ProtocolError` of scope UPDATE with the security reason,
so it gets a receipt and a counter like any other verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedstream.cloud.keyring import Keyring
from fedstream.shared.errors import ProtocolError, Scope, SecurityError
from fedstream.shared.protocol.messages import BlobHeader, UpdateMeta
from fedstream.shared.protocol.statements import update_statement


@dataclass(frozen=True, slots=True)
class UpdateSignatures:
    """Checks updates against the keyring.

    Args:
        keyring: Enrolled keys, revocations and used sequence numbers.
        federation: Signed into every statement.
        model: Signed into every statement.
        required: Refuse updates of edges without an enrolled key.
    """

    keyring: Keyring
    federation: str
    model: str
    required: bool

    def check(self, meta: UpdateMeta, header: BlobHeader) -> None:
        """Check the signature and the sequence number (reads only).

        Raises:
            ProtocolError: scope UPDATE; UNENROLLED, REVOKED, UNSIGNED, BAD_SIGNATURE or
                REPLAYED.
        """
        if not self.required and not self.keyring.enrolled(meta.edge_id):
            return
        try:
            verifier = self.keyring.verifier(meta.edge_id)
            statement = update_statement(federation=self.federation, model=self.model,
                                         meta=meta, header=header)
            verifier.check(meta.sig, statement, what=f"update {header.blob_id}")
            self.keyring.check_seq(meta.edge_id, meta.seq, header.blob_id)
        except SecurityError as err:
            raise ProtocolError(err.reason, err.detail, scope=Scope.UPDATE) from err

    def claim(self, meta: UpdateMeta, header: BlobHeader) -> None:
        """`check`, then record the update's sequence number as used.

        Raises:
            ProtocolError: as `check`.
        """
        self.check(meta, header)
        if not meta.sig:
            return  # an unenrolled edge's unsigned update, taken because not required
        try:
            self.keyring.claim(meta.edge_id, meta.seq, header.blob_id)
        except SecurityError as err:
            raise ProtocolError(err.reason, err.detail, scope=Scope.UPDATE) from err
