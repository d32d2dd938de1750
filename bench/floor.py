"""The floor of a SendGrid send in Python: the least work any sender must do, with nothing else.

Run by `bench/send.py --floor` on the store its send just used, as a whole process like the send:
read every recipient's row, sign one unsubscribe link each (one HMAC-SHA256), build each request's
personalizations as dicts and `json.dumps` them with the issue's content, and write one update per
row. No network, no ledger, no guarantees: what is left of the send when everything that makes it
safe is taken away.

    python bench/floor.py STORE.db ISSUE_HTML_BYTES
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import sqlite3
import sys

BATCH = 1000


def main() -> None:
    path, html_bytes = sys.argv[1], int(sys.argv[2])
    html, text = "x" * html_bytes, "x" * (html_bytes // 4)
    mac = hmac.new(b"bench-secret", b"unsubscribe\x00", hashlib.sha256)
    conn = sqlite3.connect(path)
    issue = conn.execute("SELECT issue FROM deliveries LIMIT 1").fetchone()[0]
    rows = conn.execute("SELECT s.id, s.email, s.name FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
                        "WHERE d.issue = ? ORDER BY d.subscriber_id", (issue,))
    requests = 0
    while batch := rows.fetchmany(BATCH):
        personalizations = []
        for sid, email, name in batch:
            signer = mac.copy()
            signer.update(f"{sid}.weekly.{issue}".encode())
            token = base64.urlsafe_b64encode(signer.digest()[:16]).decode()
            personalizations.append({
                "to": [{"email": email, "name": name}],
                "substitutions": {"%%name%%": name, "%%email%%": email},
                "headers": {"List-Unsubscribe": f"<https://news.example.com/unsubscribe/{sid}.{token}>"},
                "custom_args": {"issue": issue, "list": "weekly", "subscriber": str(sid)},
            })
        body = json.dumps({"personalizations": personalizations, "content": [
            {"type": "text/plain", "value": text}, {"type": "text/html", "value": html}]})
        requests += len(body) > 0
        conn.executemany("UPDATE deliveries SET state = 'sent' WHERE issue = ? AND subscriber_id = ?",
                         [(issue, sid) for sid, _email, _name in batch])
    conn.commit()
    print(requests)


if __name__ == "__main__":
    main()
