"""A real IMAP and POP3 server for the tests: Debian's Dovecot with a throwaway config on 127.0.0.1.

One user (`bounces` / `mailbox-secret`) with a Maildir in a temporary folder; plain-text login is
allowed because it listens on loopback only, and TLS (implicit, and STARTTLS) is offered with a
self-signed certificate for 127.0.0.1 that a test trusts through `SSL_CERT_FILE`. `append` puts
messages in a folder over IMAP, as mail arriving would; `folders` lists what each folder holds,
for the tests' assertions.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from imapclient import IMAPClient

from .smtp_server import free_port

USER, PASSWORD = "bounces", "mailbox-secret"
BINARY = shutil.which("dovecot") or "/usr/sbin/dovecot"


def available() -> bool:
    return Path(BINARY).exists()


def certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (the tests trust it through SSL_CERT_FILE)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Dovecot:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
        self.dir.chmod(0o755)  # Dovecot's own users read the config's files and the mail here
        self.imap_port, self.pop3_port = free_port(), free_port()
        self.imaps_port, self.pop3s_port = free_port(), free_port()
        self.cert, key = certificate(self.dir)
        root = os.geteuid() == 0
        # Dovecot never opens mail as root: the mail user is nobody when the tests run as root.
        mail_user = pwd.getpwnam("nobody") if root else pwd.getpwuid(os.geteuid())
        internal = "dovecot" if root else mail_user.pw_name
        login = "dovenull" if root else mail_user.pw_name
        home = self.dir / "home"
        home.mkdir()
        (self.dir / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        (self.dir / "dovecot.conf").write_text(f"""
base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/log
info_log_path = {self.dir}/log
protocols = imap pop3
listen = 127.0.0.1
ssl = yes
ssl_cert = <{self.cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = {min(mail_user.pw_uid, 100)}
mail_location = maildir:{home}/%u/Maildir
mail_uid = {mail_user.pw_uid}
mail_gid = {mail_user.pw_gid}
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.dir}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={home}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.pop3_port}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {self.pop3s_port}
  }}
}}
service anvil {{
  chroot =
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
""")
        if root:
            shutil.chown(home, mail_user.pw_uid, mail_user.pw_gid)
        self.proc = subprocess.Popen([BINARY, "-F", "-c", str(self.dir / "dovecot.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 20
        while True:
            try:
                with imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=2) as imap:
                    imap.login(USER, PASSWORD)
                break
            except (OSError, imaplib.IMAP4.error):
                if time.time() > deadline or self.proc.poll() is not None:
                    log = (self.dir / "log").read_text() if (self.dir / "log").exists() else ""
                    self.close()
                    raise RuntimeError(f"dovecot did not start: {log[-2000:]}") from None
                time.sleep(0.1)

    def append(self, messages: list[bytes], folder: str = "INBOX") -> None:
        with imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30) as imap:
            imap.login(USER, PASSWORD)
            imap.create(folder)
            for raw in messages:
                imap.append(folder, "", imaplib.Time2Internaldate(time.time()), raw)

    def folders(self) -> dict[str, int]:
        """How many messages each folder holds (those flagged deleted not counted), "/" between levels."""
        with IMAPClient("127.0.0.1", self.imap_port, ssl=False, timeout=30) as imap:
            imap.login(USER, PASSWORD)
            found = {}
            for flags, delimiter, name in imap.list_folders():
                if b"\\Noselect" in flags or b"\\NonExistent" in flags:
                    continue  # a parent level only
                imap.select_folder(name, readonly=True)
                found[name.replace(delimiter.decode(), "/")] = len(imap.search(["UNDELETED"]))
            return found

    def raw(self, folder: str) -> list[bytes]:
        """Every message in `folder`, as stored."""
        with IMAPClient("127.0.0.1", self.imap_port, ssl=False, timeout=30) as imap:
            imap.login(USER, PASSWORD)
            imap.select_folder(folder, readonly=True)
            uids = imap.search(["UNDELETED"])
            return [data[b"RFC822"] for _uid, data in sorted(imap.fetch(uids, ["RFC822"]).items())] if uids else []

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
