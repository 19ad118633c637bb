"""Runs in the emulator: the in-memory chat session store behind chat/*Session* and session/*."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

TITLE_CHARS = 40


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class ChatRecord:
    request_id: str
    question: str
    session_type: str
    created: int = field(default_factory=now_ms)
    finish_status: int = 0
    summary: str = ""
    answer: str = ""  # the streamed answer, replayed by session/load (not on the wire)

    def as_wire(self) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "question": self.question,
            "sessionType": self.session_type,
            "finishStatus": self.finish_status,
            "summary": self.summary,
            "gmtCreate": self.created,
        }


@dataclass
class Session:
    session_id: str
    workspace: str = ""
    model: str = "auto"
    mode: str = ""
    title: str = ""
    created: int = field(default_factory=now_ms)
    modified: int = field(default_factory=now_ms)
    records: list[ChatRecord] = field(default_factory=list)

    def as_summary(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "sessionTitle": self.title,
            "projectName": self.workspace.rstrip("/").rsplit("/", 1)[-1],
            "gmtCreate": self.created,
            "gmtModified": self.modified,
        }

    def as_detail(self) -> dict[str, Any]:
        return {**self.as_summary(), "chatRecords": [r.as_wire() for r in self.records]}


class SessionStore:
    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}

    def create(self, workspace: str = "") -> Session:
        session = Session(session_id=str(uuid.uuid4()), workspace=workspace)
        self.sessions[session.session_id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        return self.sessions.get(session_id)

    def get_or_create(self, session_id: str) -> Session:
        """Legacy chat/ask may name a session the client invented; adopt it."""
        session = self.sessions.get(session_id)
        if session is None:
            session = Session(session_id=session_id)
            self.sessions[session_id] = session
        return session

    def add_record(self, session: Session, record: ChatRecord) -> bool:
        """Store a turn; True when it is the session's first one (time to send a title)."""
        first = not session.records
        if first:
            session.title = (
                record.question.strip().splitlines()[0][:TITLE_CHARS]
                if record.question.strip()
                else "New chat"
            )
        session.records.append(record)
        session.modified = now_ms()
        return first

    def delete(self, session_id: str) -> bool:
        return self.sessions.pop(session_id, None) is not None

    def clear(self) -> int:
        count = len(self.sessions)
        self.sessions.clear()
        return count
