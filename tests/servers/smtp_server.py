"""A real SMTP server (aiosmtpd) that keeps every message it receives in a Maildir.

Usage: python smtp_server.py MAILDIR [--auth USER:PASS] [--starttls] [--port N]
Prints "PORT <n>" once it listens on 127.0.0.1 (a free port). With --auth, mail is
accepted only after AUTH PLAIN/LOGIN with those credentials; with --starttls, the
server offers STARTTLS with the self-signed certificate beside this file and
requires it before AUTH and mail.
"""
import argparse
import os
import ssl
import time

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("maildir")
    ap.add_argument("--auth")
    ap.add_argument("--starttls", action="store_true")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()

    authenticator = None
    if args.auth:
        user, password = args.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user \
                and auth_data.password.decode() == password
            # handled=False: aiosmtpd itself answers 535 to a failed login.
            return AuthResult(success=ok, handled=False)

    tls = None
    if args.starttls:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(os.path.join(HERE, "smtp-test-cert.pem"), os.path.join(HERE, "smtp-test-key.pem"))

    # aiosmtpd connects to its own port to check it is up, so it needs a real one.
    import socket
    port = args.port
    if not port:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
    controller = Controller(
        Mailbox(args.maildir),
        hostname="127.0.0.1",
        port=port,
        # A fixed name: getfqdn() would wait on DNS, which this sandbox does not answer.
        server_hostname="runway-test-smtp",
        authenticator=authenticator,
        auth_required=bool(args.auth),
        auth_require_tls=bool(args.starttls),
        require_starttls=bool(args.starttls),
        tls_context=tls,
    )
    controller.start()
    print(f"PORT {port}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
