"""Index download: the streamed epoch index is complete, integrity-checked, resumable and under the published
key
(common.proto IndexChunk; issue #3 "index download as a server-stream of chunks").

Why: a querier finalises against this index; a truncated, inconsistent or foreign-key index silently loses
hits.
"""

from __future__ import annotations

import hashlib

from fedcheck.conformance.cases._common import verified_announcement
from fedcheck.conformance.model import CaseFailed, CaseSkipped, case, check
from fedcheck.conformance.session import IndexDownload, IndexUnavailable, Session
from fedcheck.errors import FedcheckError

__all__: list[str] = []


def _full(session: Session) -> IndexDownload:
    session.require_partner()
    try:
        return session.download_index()
    except IndexUnavailable as exc:
        raise CaseFailed(f"the test partner cannot download the index: {exc.call.describe()}") from None


@case("index.download", title="the index streams completely with valid chunk and index digests",
      spec="common.proto IndexChunk (offset, chunk_sha256, total_bytes, index_sha256, last)",
      needs=("partner",))
def download(session: Session) -> str:
    """Chunks must be contiguous, each match its SHA-256, the last be marked ``last``, and the whole match
    ``index_sha256`` and ``total_bytes``; epoch and key must not change within one download."""
    dl = _full(session)
    check(not dl.problems, "; ".join(dl.problems))
    check(dl.total_bytes == len(dl.data), f"total_bytes={dl.total_bytes}, received {len(dl.data)}")
    return f"{dl.chunks} chunks, {dl.total_bytes} bytes"


@case("index.epoch_key", title="the index is for the advertised epoch and key",
      spec="common.proto IndexChunk.epoch_id/epoch_public_key, NodeInfo", needs=("partner",))
def epoch_key(session: Session) -> str:
    """Chunks must name the epoch and public key that GetNodeInfo advertises, and the index must parse and be
    bound to the same key."""
    dl = _full(session)
    info = session.info()
    check(dl.epoch_id == info.epoch_id, f"index epoch {dl.epoch_id!r} != NodeInfo epoch {info.epoch_id!r}")
    check(dl.public_key == bytes(info.epoch_public_key),
          "chunk epoch_public_key != NodeInfo.epoch_public_key")
    from fedcheck.protocol.exact import ExactIndex

    try:
        idx = ExactIndex.from_bytes(dl.data)
    except FedcheckError as exc:
        raise CaseFailed(f"the index does not parse: {exc.message}") from None
    check(idx.public_key == dl.public_key, "the serialised index is bound to another public key")
    check(idx.epoch_id == dl.epoch_id, f"the serialised index names epoch {idx.epoch_id!r}")
    return f"epoch {dl.epoch_id}, {len(idx)} entries"


@case("index.announcement",
      title="the last chunk carries the node's signed announcement of this index, made for the evaluator",
      spec="docs/protocol.md Epoch announcements; common.proto IndexChunk.announcement, "
      "EpochAnnouncementPayload.index_sha256/partner_state", needs=("partner",))
def announcement(session: Session) -> str:
    """The last chunk's ``announcement`` must verify as a querier verifies it: signed by a ``node``
    certificate of the node's own State under the federation CA (and `--crl`), for the downloaded epoch and
    key, with ``index_sha256`` = the SHA-256 of the downloaded bytes and ``partner_state`` = the State of the
    suite's signing certificate (so a relay cannot hand one partner's index to another). Skipped without
    `--ca`."""
    dl = _full(session)
    partner = session.partner_state
    if partner is None:
        raise CaseSkipped("needs a signing certificate (--partner-cert or --cert) to know the partner State")
    ann = verified_announcement(session, dl.announcement, what="the last IndexChunk", epoch_id=dl.epoch_id,
                                public_key=dl.public_key, index_sha256=hashlib.sha256(dl.data).digest(),
                                partner_state=partner)
    return (f"epoch {ann.epoch_id}, index {ann.index_sha256.hex()[:16]}… announced for {ann.partner_state}"
            + ("" if session.crl is not None else " (no --crl: revocation not checked)"))


@case("index.chunk_limit", title="chunks respect the advertised chunk size",
      spec="common.proto Limits.index_chunk_bytes", required=False, needs=("partner",))
def chunk_limit(session: Session) -> str:
    """No chunk may carry more than ``limits.index_chunk_bytes`` bytes."""
    dl = _full(session)
    limit = session.info().limits.index_chunk_bytes
    check(dl.chunks * limit >= dl.total_bytes and (dl.chunks - 1) * limit < dl.total_bytes + limit,
          f"{dl.chunks} chunks for {dl.total_bytes} bytes with index_chunk_bytes={limit}")
    return f"{dl.chunks} chunks of at most {limit} bytes"


@case("index.resume", title="a download resumes from an offset",
      spec="common.proto GetIndexRequest.offset; issue #3 (resumable by offset)", needs=("partner",))
def resume(session: Session) -> str:
    """A download from offset ``total_bytes // 2`` must return exactly the remaining bytes of the same
    index."""
    full = _full(session)
    off = full.total_bytes // 2
    try:
        part = session.download_index(offset=off)
    except IndexUnavailable as exc:
        raise CaseFailed(f"resuming at offset {off} failed: {exc.call.describe()}") from None
    check(not part.problems, "; ".join(part.problems))
    check(part.index_sha256 == full.index_sha256, "resumed download names another index_sha256")
    check(part.data == full.data[off:], f"bytes from offset {off} differ from the full download's")
    return f"resumed at {off}, {len(part.data)} bytes"
