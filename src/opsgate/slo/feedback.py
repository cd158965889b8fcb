"""User feedback on responses: parsing, storage next to the record, and CSAT / NPS-style KPIs.

Scores are thumbs (``"up"``/``"down"``) or 1-5 stars. CSAT is the share of positive feedback
(thumbs up, or 4-5 stars). The NPS-style number uses numeric scores only: % of 5s (promoters)
minus % of 1-3s (detractors), from -100 to 100; thumbs carry no such scale and are left out of it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from opsgate.domain.errors import InvalidRequestError
from opsgate.slo.reader import LATEST_FEEDBACK, Scope
from opsgate.store.sql import SqlRecordStore

MAX_COMMENT = 4000
# Distinct raters of one request (an answer is seen by one end user, or a few sharing a screen).
MAX_RATERS_PER_REQUEST = 16
SUMMARY_DIMENSIONS = {"model": "model", "tenant": "tenant", "day": "day"}


@dataclass(frozen=True)
class Feedback:
    """One validated feedback body."""

    request_id: str
    raw_score: str
    score: float | None
    positive: bool
    comment: str | None
    user: str | None


def parse_feedback(body: Any) -> Feedback:
    """Validate ``{request_id, score: "up"|"down"|1..5, comment?, user?}``; a 400 names the bad field."""
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object.", code="invalid_body")
    unknown = sorted(set(body) - {"request_id", "score", "comment", "user"})
    if unknown:
        raise InvalidRequestError(f"Unknown field '{unknown[0]}'.", param=unknown[0])
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not request_id.strip() or len(request_id) > 200:
        raise InvalidRequestError("request_id must be the id of a request (a non-empty string).", param="request_id")
    score = body.get("score")
    if score in ("up", "down"):
        raw, numeric, positive = str(score), None, score == "up"
    elif isinstance(score, int) and not isinstance(score, bool) and 1 <= score <= 5:
        raw, numeric, positive = str(score), float(score), score >= 4
    else:
        raise InvalidRequestError('score must be "up", "down" or a whole number from 1 to 5.', param="score")
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > MAX_COMMENT):
        raise InvalidRequestError(f"comment must be a string of at most {MAX_COMMENT} characters.", param="comment")
    user = body.get("user")
    if user is not None and (not isinstance(user, str) or len(user) > 256):
        raise InvalidRequestError("user must be a string of at most 256 characters.", param="user")
    return Feedback(request_id.strip(), raw, numeric, positive, comment, user)


def find_request(store: SqlRecordStore, request_id: str) -> dict[str, Any] | None:
    """The tenant, model and deployment of a stored request, or None."""
    with store.connection() as conn:
        row = store.execute(
            conn, "SELECT tenant, model, deployment FROM requests WHERE id = ?", [request_id]
        ).fetchone()
    return {"tenant": row[0], "model": row[1], "deployment": row[2]} if row else None


def store_feedback(store: SqlRecordStore, feedback: Feedback, record: dict[str, Any]) -> str:
    """Insert feedback for a stored request; returns the feedback id.

    A user's new rating of a request replaces their earlier one (so one client's repeats do not grow
    the table); different users' ratings of one request are kept, and readers count its latest.
    """
    feedback_id = "fb_" + uuid.uuid4().hex
    with store.connection() as conn, store.transaction(conn):
        same_user = "user_id IS NULL" if feedback.user is None else "user_id = ?"
        # Ratings by other users of the same request: bounded, or a client that varies ``user`` stores a row
        # per value on one request (a probe stored 1,500 at 358/s). A rater already counted may re-rate.
        others = store.execute(
            conn,
            f"SELECT COUNT(*) FROM feedback WHERE request_id = ? AND NOT ({same_user})",
            [feedback.request_id] if feedback.user is None else [feedback.request_id, feedback.user],
        ).fetchone()[0]
        if others >= MAX_RATERS_PER_REQUEST:
            raise InvalidRequestError(
                f"Request '{feedback.request_id}' already has ratings from {MAX_RATERS_PER_REQUEST} users; "
                "a user who rated it may change their rating, no new user may add one.",
                param="user",
                code="too_many_raters",
                status=409,
            )
        store.execute(
            conn,
            f"DELETE FROM feedback WHERE request_id = ? AND {same_user}",
            [feedback.request_id] if feedback.user is None else [feedback.request_id, feedback.user],
        )
        store.execute(
            conn,
            "INSERT INTO feedback (id, ts, request_id, tenant, model, deployment, user_id, raw_score, score, "
            "positive, comment) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                feedback_id,
                time.time(),
                feedback.request_id,
                record.get("tenant"),
                record.get("model"),
                record.get("deployment"),
                feedback.user,
                feedback.raw_score,
                feedback.score,
                1 if feedback.positive else 0,
                feedback.comment,
            ],
        )
    return feedback_id


def _kpis(total: float, positive: float, scored: float, promoters: float, detractors: float) -> dict[str, Any]:
    return {
        "feedback": int(total),
        "positive": int(positive),
        "csat": round(positive / total, 6) if total else None,
        "scored": int(scored),
        "nps": round(100.0 * (promoters - detractors) / scored, 2) if scored else None,
    }


def summary(store: SqlRecordStore, by: str, since: float, tenant: str | None) -> dict[str, Any]:
    """CSAT and NPS-style numbers overall and grouped ``by`` model, tenant or day."""
    if by not in SUMMARY_DIMENSIONS:
        raise InvalidRequestError(f"by must be one of {', '.join(SUMMARY_DIMENSIONS)}.", param="by")
    where, params = Scope(tenant=tenant).conditions()
    if by == "day":
        key = (
            "to_char(to_timestamp(ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
            if store.dialect == "postgres"
            else "strftime('%Y-%m-%d', ts, 'unixepoch')"
        )
    else:
        key = f"coalesce({by}, '')"
    aggregates = (
        "count(*), coalesce(sum(positive), 0), count(score), count(CASE WHEN score >= 5 THEN 1 END), "
        "count(CASE WHEN score <= 3 THEN 1 END)"
    )
    with store.connection() as conn:
        rows = store.execute(
            conn,
            f"SELECT {key}, {aggregates} FROM feedback WHERE ts >= ?{where} AND {LATEST_FEEDBACK} "
            "GROUP BY 1 ORDER BY 1",
            [since, *params],
        ).fetchall()
    data = [{by: row[0], **_kpis(*(float(v) for v in row[1:]))} for row in rows]
    totals = [sum(float(row[i]) for row in rows) for i in range(1, 6)]
    return {"object": "feedback_summary", "by": by, "overall": _kpis(*totals), "data": data}
