"""A station's whole-frame evidence: its writer and folder from ``store.evidence`` (issue 15)."""

from __future__ import annotations

from pathlib import Path

from inspector_core.runtime.config import Station
from inspector_core.store.evidence import EvidenceWriter, default_root


def evidence_root(st: Station) -> Path:
    """The station's evidence folder (``store.evidence.dir``, or beside the database)."""
    return default_root(st.store_url, st.directory, st.spec.store.evidence.dir)


def evidence_writer(st: Station) -> EvidenceWriter | None:
    """The writer of the station's evidence files, or ``None`` when it keeps no frames."""
    policy = st.spec.store.evidence
    if policy.fail == "none" and policy.pass_sample <= 0:
        return None
    return EvidenceWriter(evidence_root(st), policy)
