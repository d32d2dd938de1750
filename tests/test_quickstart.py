"""The README's quick start must stay true: run its main-job command in a copy of the repo."""

import os
import re
import shlex
import shutil
import subprocess
import sys

from .conftest import ROOT


def quickstart_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    return [blocks[0].strip(), blocks[1].strip()]


def test_readme_has_two_quickstart_commands_and_ci_runs_the_second():
    main_job, tests = quickstart_commands()
    assert main_job.startswith("python3 -m venv .venv && .venv/bin/pip install") and "--dry-run" in main_job
    assert "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_main_job_runs_on_the_embedded_defaults(tmp_path):
    for name in ("config.toml", "templates", "issues", "subscribers"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("*.db*", "*.lock"))
        else:
            shutil.copy(source, tmp_path / name)
    main_job = quickstart_commands()[0]
    unset = ("NEWSLETTER_SECRET", "SENDGRID_API_KEY", "NEWSLETTER_CONFIG")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    for command in main_job.split(" && ")[2:]:  # the package is installed already
        args = shlex.split(command)
        assert args[0] == ".venv/bin/newsletter"
        result = subprocess.run([sys.executable, "-m", "newsletter.cli", *args[1:]], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
    assert "recipients:   12 in 1 batches" in result.stdout
    assert len(list((tmp_path / "out").glob("*.eml"))) == 3
    assert (tmp_path / "subscribers" / "newsletter.db").exists()
