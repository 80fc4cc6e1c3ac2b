"""The review tooling as users run it: the pre-commit hook other repositories use, and `make review`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_pre_commit_hook_rejects_a_broken_pipeline_and_accepts_a_good_one(tmp_path: Path) -> None:
    """`pre-commit try-repo` installs this repository like `repo: <url>` would, in its own virtualenv."""
    user_repo = tmp_path / "user"
    (user_repo / "pipelines").mkdir(parents=True)
    good = user_repo / "pipelines" / "good.yml"
    good.write_text(
        "pipeline: good\nsource: {kind: postgres, connection: a}\ndestination: {kind: postgres, connection: b}\n"
        "tables: [{name: t}]\n"
    )
    broken = user_repo / "pipelines" / "broken.yml"
    broken.write_text(good.read_text().replace("pipeline: good", "pipeline: broken\nschedul: '@daily'"))
    git(user_repo, "init", "-q")
    git(user_repo, "add", ".")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "cache"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}

    def hook(*files: Path) -> subprocess.CompletedProcess:
        command = [str(BIN / "pre-commit"), "try-repo", str(REPO), "dagforge-validate", "--files", *map(str, files)]
        return subprocess.run(command, cwd=user_repo, env=env, capture_output=True, text=True, timeout=900)

    rejected = hook(broken, good)
    assert rejected.returncode == 1, rejected.stdout + rejected.stderr
    assert "pipelines/broken.yml:2:1: schedul: unknown key 'schedul'; did you mean 'schedule'?" in rejected.stdout
    accepted = hook(good)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_make_review_validates_and_writes_the_markdown_diff(tmp_path: Path) -> None:
    out = tmp_path / "summary.md"
    result = subprocess.run(
        ["make", "-C", str(REPO), "review", "BASE=HEAD", f"REVIEW_OUT={out}"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert out.read_text().startswith("### dagforge:")
