"""A local SMTP server on 127.0.0.1 for the alert tests (aiosmtpd, in a background thread):
it speaks real SMTP, keeps every message it accepts, and can require a login.

``SmtpServer(credentials=("user", "password"))`` advertises ``AUTH PLAIN LOGIN`` (over plain
TCP: a test server on loopback) and refuses mail from a session that did not log in with them
(``530``). ``messages`` holds the accepted ``email.message.EmailMessage`` objects, with
``envelopes`` the ``(mail_from, rcpt_tos)`` pairs; ``logins`` the user names that logged in
and ``failed_logins`` those that did not. ``reject_next(reply, times=1)`` answers the next
DATA command(s) with ``reply`` (``"451 4.3.0 Try again later"``, ``"554 5.7.1 Rejected"``).
No STARTTLS: a client that asks for it gets ``SMTPNotSupportedError``.
"""

from __future__ import annotations

import collections
import email
import email.policy
import logging
import socket
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class SmtpServer:
    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[str] = []
        self.failed_logins: list[str] = []
        self._rejects: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def host(self) -> str:
        return self._controller.hostname

    @property
    def port(self) -> int:
        return self._controller.port

    def reject_next(self, reply: str, times: int = 1) -> None:
        with self._lock:
            self._rejects.extend([reply] * times)

    # -- aiosmtpd hooks -------------------------------------------------------------------
    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        login, password = auth_data.login.decode(), auth_data.password.decode()
        ok = self.credentials is not None and (login, password) == self.credentials
        with self._lock:
            (self.logins if ok else self.failed_logins).append(login)
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server, session, envelope) -> str:
        if self.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        with self._lock:
            if self._rejects:
                return self._rejects.popleft()
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 2.0.0 Message accepted for delivery"

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> SmtpServer:
        with socket.socket() as probe:  # a free port (aiosmtpd's readiness check cannot use port 0)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd warns of its own deprecations on each login
        auth = {"authenticator": self._authenticate, "auth_require_tls": False} if self.credentials else {}
        self._controller = Controller(self, hostname="127.0.0.1", port=port, **auth)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
