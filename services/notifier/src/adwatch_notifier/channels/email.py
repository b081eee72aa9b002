"""Email over SMTP (STARTTLS and auth when configured): text + HTML, threaded per fingerprint."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from adwatch.contracts import Alert
from adwatch_notifier.delivery import Delivery, DeliveryError, classify_smtp, transport_error
from adwatch_notifier.formatting import Thread, email_html, email_subject, email_text, message_id
from adwatch_notifier.settings import NotifierSettings


class EmailChannel:
    name = "email"
    provider_dedup = False
    min_interval_ms = 0

    def __init__(self, settings: NotifierSettings, grafana_url: str) -> None:
        self.s = settings
        self.grafana_url = grafana_url
        self.default_target = settings.smtp_to

    def compose(self, alert: Alert, recipients: str, thread: Thread | None = None) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.s.smtp_from
        msg["To"] = recipients
        msg["Subject"] = email_subject(alert, reply=thread is not None)
        msg["Date"] = formatdate(alert.detected_at_ms / 1000, usegmt=True)
        msg["Message-ID"] = message_id(alert)
        msg["X-Adwatch-Fingerprint"] = alert.fingerprint
        msg.set_content(email_text(alert, self.grafana_url, thread))
        msg.add_alternative(email_html(alert, self.grafana_url, thread), subtype="html")
        return msg

    def render(self, alert: Alert, target: str, thread: Thread | None = None) -> EmailMessage:
        return self.compose(alert, target or self.default_target, thread)

    def send(self, alert: Alert, target: str, ref: str | None = None, payload: Any = None) -> Delivery:
        """A firing mail is the thread's root; later mails (recovery, escalation, a group's update)
        answer the root's Message-ID (``ref``, as sent), and the root stays the episode's ref."""
        recipients = target or self.default_target
        msg = payload if isinstance(payload, EmailMessage) else self.render(alert, target)
        root = ref if ref and ref.startswith("<") else None
        for name in ("In-Reply-To", "References"):
            del msg[name]
            if root:
                msg[name] = root
        try:
            with smtplib.SMTP(self.s.smtp_host, self.s.smtp_port, timeout=self.s.request_timeout_seconds) as smtp:
                if self.s.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context(cafile=self.s.smtp_ca_file or None))
                if self.s.smtp_user and self.s.smtp_password is not None:
                    smtp.login(self.s.smtp_user, self.s.smtp_password.get_secret_value())
                smtp.send_message(msg, to_addrs=[r.strip() for r in recipients.split(",") if r.strip()])
        except smtplib.SMTPResponseException as exc:
            retry, reason = classify_smtp(exc.smtp_code)
            raise DeliveryError(reason, f"SMTP {exc.smtp_code}", retryable=retry) from None
        except smtplib.SMTPRecipientsRefused as exc:
            code = min(c for c, _ in exc.recipients.values())
            retry, reason = classify_smtp(code)
            raise DeliveryError(reason, f"SMTP {code} recipients refused", retryable=retry) from None
        except ssl.SSLError as exc:
            raise DeliveryError("clientError", f"TLS {type(exc).__name__}", retryable=False) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise transport_error(exc) from None
        return Delivery(self.name, recipients, root or str(msg["Message-ID"]))

    def close(self) -> None:
        return None


def build(settings: NotifierSettings, grafana_url: str = "") -> EmailChannel:
    return EmailChannel(settings, grafana_url)
