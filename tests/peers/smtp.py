#!/usr/bin/env python3
"""An SMTP relay for the mail tests: aiosmtpd (a server nobody here wrote)
with STARTTLS required and AUTH required over TLS. Each message it accepts
is parsed with Python's email package and written to DIR/N.json:
{"mail_from", "rcpt_tos", "login", "from", "to", "subject",
 "content_type", "text", "html"}.

usage: smtp.py PORT DIR CERT KEY USER PASSWORD
Prints "ready" once listening; stops when stdin closes (or after 300 s).
"""
import json
import os
import select
import ssl
import sys
import time

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError:
    sys.exit("aiosmtpd is missing: pip install 'aiosmtpd==1.4.6' (.ci/run does)")
import email
import email.policy


def main():
    port, out, cert, key, user, password = sys.argv[1:7]
    port = int(port)
    count = [0]

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login == user.encode()
              and auth_data.password == password.encode())
        if ok:
            session.who = auth_data.login.decode()
        return AuthResult(success=ok, handled=False)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            msg = email.message_from_bytes(envelope.original_content or envelope.content,
                                           policy=email.policy.default)
            text = msg.get_body(("plain",))
            html = msg.get_body(("html",))
            record = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "login": getattr(session, "who", None),
                "tls": session.ssl is not None,
                "from": str(msg["From"]),
                "to": str(msg["To"]),
                "subject": str(msg["Subject"]),
                "content_type": msg.get_content_type(),
                "text": text.get_content() if text is not None else None,
                "html": html.get_content() if html is not None else None,
            }
            count[0] += 1
            path = os.path.join(out, f"{count[0]}.json")
            with open(path + ".tmp", "w") as f:
                json.dump(record, f)
            os.rename(path + ".tmp", path)
            return "250 OK"

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    controller = Controller(
        Handler(), hostname="127.0.0.1", port=port,
        tls_context=ctx, require_starttls=True,
        authenticator=authenticator, auth_required=True, auth_require_tls=True,
    )
    controller.start()
    print("ready", flush=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline:
            r, _, _ = select.select([sys.stdin], [], [], 1.0)
            if r and not sys.stdin.readline():
                break
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
