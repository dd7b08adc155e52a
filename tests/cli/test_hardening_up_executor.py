"""Issue 13, point 3: `gpucaas up` never runs tenants' commands unisolated by default; the
process executor is behind --unsafe-process, and a missing bubblewrap is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpucaas.cli import app
from gpucaas.errors import EXIT_BAD_INPUT, EXIT_REFUSED

runner = CliRunner()


def test_the_process_executor_needs_unsafe_process(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["up", "--state-dir", str(tmp_path / "state"), "--executor", "process"]
    )
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "Traceback" not in result.output
    assert result.stderr.startswith("error: --executor process runs tenants' commands")
    assert "--unsafe-process" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "state").exists()  # refused before anything was made


def test_the_sandbox_without_bubblewrap_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, no podman
    result = runner.invoke(
        app, ["up", "--state-dir", str(tmp_path / "state"), "--executor", "sandbox"]
    )
    assert result.exit_code == EXIT_REFUSED, result.output  # Unavailable: fix the host, retry
    assert "Traceback" not in result.output
    assert "apt-get install bubblewrap" in result.stderr
    assert len(result.stderr.splitlines()) == 1
