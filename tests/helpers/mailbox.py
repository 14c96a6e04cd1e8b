"""A real SMTP server on loopback that keeps what it receives."""

from __future__ import annotations

from tests.helpers.ports import free_port


class Mailbox:
    """A real SMTP server on loopback (aiosmtpd) that keeps what it receives."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.messages: list = []
        mailbox = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                from email import message_from_bytes
                from email.policy import default

                mailbox.messages.append((list(envelope.rcpt_tos),
                                         message_from_bytes(envelope.content, policy=default)))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.port = self.controller.port

    def to(self, address: str) -> list:
        return [message for recipients, message in self.messages if address in recipients]
