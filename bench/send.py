"""Send the sample issue to 100,000 and 1,000,000 subscribers through a provider's fake server.

The fake (SendGrid's, or Postmark's, Mailgun's or SES's with `--provider`) runs in its own process on
127.0.0.1 and answers every request after `--latency` seconds (0: loopback speed; 0.25: a real
API's round trip for a full batch); the store is a fresh SQLite file. Prints the whole
command's time, recipients and requests per second, the sender's CPU seconds and peak RSS, and the
fake server's CPU seconds (on a 2-core machine the two share the cores).

    python bench/send.py [--sizes 100000 1000000] [--latency 0.25] [--concurrency N] [--provider postmark|mailgun|ses]
                         [--floor] [--workers N|auto]

With `--floor`, bench/floor.py then runs on the same store: the least work any sender must do.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, run_measured, write_config

KEY = "SG.bench-key"
FAKES = {"sendgrid": ("fake_sendgrid.py", "--key"), "postmark": ("fake_postmark.py", "--token"),
         "mailgun": ("fake_mailgun.py", "--key"), "ses": ("fake_ses.py", "--key")}
SECTIONS = {"postmark": 'api_base = "{url}"\n', "mailgun": 'api_base = "{url}"\ndomain = "mg.example.com"\n',
            "ses": 'endpoint_url = "{url}"\n'}


def fake_server(provider: str, latency: float) -> tuple[subprocess.Popen[str], str]:
    script, option = FAKES[provider]
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / script), option, KEY,
                             "--latency", str(latency)], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    return proc, f"http://127.0.0.1:{port}"


def cpu_seconds(pid: int) -> float:
    """A process's user and system CPU so far (Linux's /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/_stats", timeout=10) as response:
        return json.loads(response.read())


def floor(folder: Path, issue: Path, env: dict[str, str], send_seconds: float, send_cpu: float) -> None:
    """The same store through bench/floor.py: the send's time beside the least any sender must do."""
    run_measured(["--config", str(folder / "config.toml"), "render", str(issue), "--out", str(folder / "out")], env)
    html = sum(path.stat().st_size for path in (folder / "out").glob("*.html"))
    seconds, _peak, _output, cpu = run_measured([str(folder / "bench.db"), str(html)], env,
                                                program=(str(ROOT / "bench" / "floor.py"),))
    print(f"floor: {seconds:6.1f} s, CPU {cpu:.1f} s; the send is {send_seconds / seconds:.2f}x the floor "
          f"(CPU {send_cpu / cpu:.2f}x)", flush=True)


def bench(size: int, latency: float, concurrency: int | None, provider: str, with_floor: bool = False,
          workers: str = "1") -> None:
    server, url = fake_server(provider, latency)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            config = write_config(folder, api_base=url)
            if provider != "sendgrid":
                config.write_text(config.read_text() + f'[provider]\nbackend = "{provider}"\n'
                                                       f'[{provider}]\n' + SECTIONS[provider].format(url=url))
            if concurrency:
                config.write_text(config.read_text() + f"[send]\nconcurrency = {concurrency}\n")
            csv_path = folder / "readers.csv"
            with csv_path.open("w") as handle:
                handle.write("email,name,city\n")
                for i in range(size):
                    handle.write(f"reader{i}@example{i % 97}.com,Reader {i},City {i % 500}\n")
            env = {**os.environ, "NEWSLETTER_SECRET": "bench-secret", "SENDGRID_API_KEY": KEY,
                   "POSTMARK_SERVER_TOKEN": KEY, "MAILGUN_API_KEY": KEY, "AWS_ACCESS_KEY_ID": KEY,
                   "AWS_SECRET_ACCESS_KEY": KEY, "AWS_EC2_METADATA_DISABLED": "true"}
            run_measured(["--config", str(config), "subscribers", "import", str(csv_path), "--list", "weekly"], env)
            issue = ROOT / "issues" / "2026-12-01.md"
            seconds, peak, output, cpu = run_measured(
                ["--config", str(config), "send", str(issue), "--list", "weekly", "--yes",
                 *(["--workers", workers] if workers != "1" else [])], env)
            got = stats(url)
            served = cpu_seconds(server.pid)
            assert got["received"] == got["unique"] == size, (got, output)
            print(f"{provider}: {size:>9,} recipients, latency {latency * 1000:.0f} ms, workers {workers}, concurrency "
                  f"{concurrency or 'default'}: {seconds:6.1f} s, {size / seconds:9,.0f} recipients/s, "
                  f"{got['requests']:,} requests ({got['requests'] / seconds:,.1f}/s), sender CPU {cpu:.1f} s, "
                  f"peak RSS {peak:.0f} MB, fake server CPU {served:.1f} s", flush=True)
            if with_floor:
                floor(folder, issue, env, seconds, cpu)
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the fake server takes per request")
    parser.add_argument("--concurrency", type=int, help="[send] concurrency (default: the config's default)")
    parser.add_argument("--provider", choices=sorted(FAKES), default="sendgrid")
    parser.add_argument("--floor", action="store_true", help="then time bench/floor.py on the same store")
    parser.add_argument("--workers", default="1", help="send --workers N|auto")
    args = parser.parse_args()
    for size in args.sizes:
        bench(size, args.latency, args.concurrency, args.provider, args.floor, args.workers)


if __name__ == "__main__":
    main()
