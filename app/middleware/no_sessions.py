"""No cookie session: callers of this API send bearer tokens, and nothing here reads or writes
flask.session. Flask's default interface builds a signing serializer on every request to open one
(py-spy: about 4 % of a short streamed call's CPU); this one hands out Flask's null session instead."""

from __future__ import annotations

from typing import Any

from flask.sessions import NullSession, SessionInterface


class NoSessions(SessionInterface):
    def open_session(self, app: Any, request: Any) -> NullSession:
        return self.make_null_session(app)

    def save_session(self, app: Any, session: Any, response: Any) -> None:
        return None
