"""The audit trail: who did what to which object (``audit_events``).

Organizer actions (re-run, cancel, phase settings, reveal, visibility, task upload, case load) and
account events (sign-in failures, tokens) are recorded in the same transaction as the change.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from arena.models import AuditEvent, User


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [_plain(x) for x in v]
    if hasattr(v, "isoformat"):
        return v.isoformat()
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def record(session: Session, actor: User | int | None, action: str, target_type: str | None = None,
           target_id: Any = None, **detail: Any) -> AuditEvent:
    """Add an audit event (the caller commits). ``actor``: a user, a user id or None (the system)."""
    actor_id = actor if isinstance(actor, int) or actor is None else getattr(actor, "id", None)
    event = AuditEvent(actor_user_id=actor_id, action=action, target_type=target_type,
                       target_id=None if target_id is None else str(target_id), detail=_plain(detail))
    session.add(event)
    return event
