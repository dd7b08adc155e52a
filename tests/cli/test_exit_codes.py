"""Every command group of ``gpucaas``, and ``fmctl``, exits by the one table of
:func:`gpucaas.errors.exit_code`: 2 for bad input, 1 for a refused operation, 3 for a server
it cannot reach; each time with one line on stderr and no traceback.

In-process with typer's CliRunner. The tenant and admin commands talk to a stand-in API (a
stdlib HTTP server in a thread) that answers every request with the error a test chose, so
the exit code of each HTTP refusal is checked against what the control plane sends.
"""

from __future__ import annotations

import fcntl
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from gpucaas.cli import app
from gpucaas.cli.fmctl import app as fmctl_app
from gpucaas.errors import EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_UNREACHABLE

runner = CliRunner()
UNREACHABLE_URL = "http://127.0.0.1:1"
SYSFS_FIXTURE = Path(__file__).resolve().parents[1] / "node" / "sysfs_fixture.py"


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """``fabric serve`` points the root logger at the stderr CliRunner captured; put it back,
    or a later test's log line goes to a closed stream (a "Logging error" traceback)."""
    handlers, level = logging.root.handlers[:], logging.root.level
    yield
    logging.root.handlers[:] = handlers
    logging.root.setLevel(level)


def invoke(command: typer.Typer, args: list[str]) -> Result:
    return runner.invoke(command, args, env={"GPUCAAS_CONFIG": "/nonexistent/config.toml"})


def with_flags(args: list[str], *flags: str) -> list[str]:
    """``args`` with ``flags`` added where options go (before a ``--``)."""
    cut = args.index("--") if "--" in args else len(args)
    return [*args[:cut], *flags, *args[cut:]]


def assert_exit(result: Result, code: int, prefix: str = "error: ") -> None:
    """The exit status is ``code``; stderr is one line naming the problem, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.stderr.startswith(prefix), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


# -- a stand-in API --------------------------------------------------------------------------


class StandIn:
    """An HTTP server that answers every request with ``status`` and an API error body."""

    def __init__(self) -> None:
        self.status = 500
        self.kind = "Error"
        self.message = "unset"
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                body = json.dumps(
                    {"error": {"type": stand_in.kind, "message": stand_in.message}}
                ).encode()
                self.send_response(stand_in.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, status: int, kind: str, message: str) -> None:
        self.status, self.kind, self.message = status, kind, message


@pytest.fixture(scope="module")
def api() -> Iterator[StandIn]:
    stand_in = StandIn()
    thread = threading.Thread(target=stand_in.server.serve_forever, daemon=True)
    thread.start()
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


# Every command that talks to the API, as a tenant or the operator types it.
API_COMMANDS = {
    "run": ["run", "--gpus", "1", "busybox", "--", "true"],
    "ps": ["ps"],
    "logs": ["logs", "c0ffee"],
    "describe": ["describe", "c0ffee"],
    "stop": ["stop", "c0ffee"],
    "admin tenant create": ["admin", "tenant", "create", "vision"],
    "admin tenant list": ["admin", "tenant", "list"],
    "admin tenant delete": ["admin", "tenant", "delete", "vision"],
    "admin token create": ["admin", "token", "create", "--tenant", "vision"],
    "admin token list": ["admin", "token", "list"],
    "admin token revoke": ["admin", "token", "revoke", "tok1"],
    "admin fleet": ["admin", "fleet"],
    "admin cordon": ["admin", "cordon", "node-0", "--gpu", "1"],
    "admin drain": ["admin", "drain", "node-0"],
}

# What the control plane answers, and the exit status the CLI must end with.
API_ANSWERS = {
    "400 bad input": (400, "InvalidRequest", "limit must be between 1 and 500", EXIT_BAD_INPUT),
    "422 bad field": (422, "ValidationError", "gpus: must be 1 to 8", EXIT_BAD_INPUT),
    "401 bad token": (401, "Unauthenticated", "unknown token", EXIT_BAD_INPUT),
    "403 admin only": (403, "Forbidden", "this needs an admin token", EXIT_BAD_INPUT),
    "404 no such": (404, "NotFound", "container 'c0ffee' not found", EXIT_BAD_INPUT),
    "409 conflict": (409, "AlreadyExists", "tenant 'vision' already exists", EXIT_REFUSED),
    "429 quota now": (429, "QuotaExceeded", "tenant 'demo' holds 8 of 8 GPUs", EXIT_REFUSED),
    "403 quota ever": (403, "QuotaExceeded", "may hold at most 8 GPUs", EXIT_REFUSED),
    "503 unavailable": (503, "StoreUnavailable", "store is unavailable", EXIT_REFUSED),
}


@pytest.mark.parametrize("answer", API_ANSWERS.values(), ids=API_ANSWERS.keys())
@pytest.mark.parametrize("args", API_COMMANDS.values(), ids=API_COMMANDS.keys())
def test_api_commands_exit_by_the_answer(
    api: StandIn, args: list[str], answer: tuple[int, str, str, int]
) -> None:
    status, kind, message, code = answer
    api.answer(status, kind, message)
    result = invoke(app, with_flags(args, "--url", api.url, "--token", "gpc_test"))
    assert_exit(result, code)
    assert message in result.stderr


@pytest.mark.parametrize("args", API_COMMANDS.values(), ids=API_COMMANDS.keys())
def test_api_commands_exit_3_when_the_api_is_unreachable(args: list[str]) -> None:
    result = invoke(app, with_flags(args, "--url", UNREACHABLE_URL, "--token", "gpc_test"))
    assert_exit(result, EXIT_UNREACHABLE)
    assert UNREACHABLE_URL in result.stderr and "gpucaas up" in result.stderr


@pytest.mark.parametrize("args", API_COMMANDS.values(), ids=API_COMMANDS.keys())
def test_api_commands_without_a_token_exit_2(args: list[str]) -> None:
    result = invoke(app, with_flags(args, "--url", UNREACHABLE_URL))
    assert_exit(result, EXIT_BAD_INPUT)
    assert "no API token" in result.stderr


# -- the groups that run without a server ------------------------------------------------------


def test_topology_bad_input_exits_2() -> None:
    assert_exit(invoke(app, ["topology", "show", "hgx-a100-8"]), EXIT_BAD_INPUT)


def test_sim_bad_input_exits_2() -> None:
    result = invoke(app, ["sim", "--synthetic", "pods=many"])
    assert_exit(result, EXIT_BAD_INPUT)
    assert "bad synthetic trace spec" in result.stderr


def test_trace_bad_input_exits_2(tmp_path: Path) -> None:
    result = invoke(app, ["trace", "inspect", str(tmp_path / "absent.csv")])
    assert_exit(result, EXIT_BAD_INPUT)


def test_fabric_serve_bad_input_exits_2(tmp_path: Path) -> None:
    result = invoke(app, ["fabric", "serve", "--backend", "bogus", "--state-dir", str(tmp_path)])
    assert_exit(result, EXIT_BAD_INPUT)
    assert "choose simulated or nvfm" in result.stderr


def test_fabric_serve_without_libnvfm_exits_3(tmp_path: Path) -> None:
    result = invoke(
        app,
        ["fabric", "serve", "--nvfm-library", "/nonexistent/libnvfm.so.1",
         "--state-dir", str(tmp_path), "--listen", str(tmp_path / "fm.sock")],
    )  # fmt: skip
    assert_exit(result, EXIT_UNREACHABLE)
    assert "/nonexistent/libnvfm.so.1" in result.stderr


def test_node_cdi_validate_of_a_bad_file_exits_2(tmp_path: Path) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text("{not json")
    result = invoke(app, ["node", "cdi", "validate", str(spec)])
    assert result.exit_code == EXIT_BAD_INPUT  # the violations go to stdout, one a line
    assert result.stdout.startswith("error: ") and "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_node_vfio_refused_by_the_host_exits_1(tmp_path: Path) -> None:
    root = tmp_path / "shared-group"  # a NIC shares a GPU's IOMMU group
    subprocess.run(
        [sys.executable, str(SYSFS_FIXTURE), str(root), "--variant", "shared-group"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    result = invoke(app, ["node", "vfio", "bind", "--sysfs", str(root), "--simulate-kernel"])
    assert_exit(result, EXIT_REFUSED)
    assert "IOMMU group" in result.stderr


def test_up_bad_input_exits_2(tmp_path: Path) -> None:
    result = invoke(app, ["up", "--backend", "bogus", "--state-dir", str(tmp_path)])
    assert_exit(result, EXIT_BAD_INPUT)


def test_up_on_a_busy_state_dir_exits_1(tmp_path: Path) -> None:
    with (tmp_path / "lock").open("ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = invoke(
            app,
            ["up", "--state-dir", str(tmp_path), "--executor", "process", "--unsafe-process",
             "--nodes", "1", "--listen", "127.0.0.1:0"],
        )  # fmt: skip
    assert_exit(result, EXIT_REFUSED)
    assert "another gpucaas up is running" in result.stderr


def test_up_with_an_unreachable_kubernetes_api_exits_3(tmp_path: Path) -> None:
    # A real process: `up` leaves its state-dir lock open when the backend fails to start,
    # which in-process would leak into later tests as a ResourceWarning.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "abc"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    done = subprocess.run(
        [str(Path(sys.executable).parent / "gpucaas"), "up", "--backend", "kubernetes",
         "--kubeconfig", str(kubeconfig), "--state-dir", str(tmp_path / "state"),
         "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == EXIT_UNREACHABLE, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("error: Kubernetes API")


# -- fmctl -----------------------------------------------------------------------------------


def test_fmctl_bad_input_exits_2(tmp_path: Path) -> None:
    result = invoke(fmctl_app, ["--simulated", str(tmp_path / "f.json"), "activate", "x"])
    assert result.exit_code == EXIT_BAD_INPUT  # click's own usage error (not an int)
    assert "Traceback" not in result.output
    result = invoke(fmctl_app, ["--simulated", str(tmp_path / "f.json"), "set-activated", "1,x"])
    assert_exit(result, EXIT_BAD_INPUT, "fmctl: ")


def test_fmctl_refused_by_fabric_manager_exits_1(tmp_path: Path) -> None:
    state = str(tmp_path / "f.json")
    assert invoke(fmctl_app, ["--simulated", state, "activate", "3"]).exit_code == 0
    result = invoke(fmctl_app, ["--simulated", state, "activate", "1"])
    assert_exit(result, EXIT_REFUSED, "fmctl: ")
    assert "FM_ST_IN_USE (-7)" in result.stderr


def test_fmctl_unreachable_controller_exits_3(tmp_path: Path) -> None:
    result = invoke(fmctl_app, ["--address", str(tmp_path / "absent.sock"), "list"])
    assert_exit(result, EXIT_UNREACHABLE, "fmctl: ")
    assert "cannot reach the fm-controller" in result.stderr


def test_usage_errors_exit_2() -> None:
    for command, args in ((app, ["run", "--gpus", "many"]), (fmctl_app, ["--bogus"])):
        result = invoke(command, args)
        assert result.exit_code == EXIT_BAD_INPUT
        assert "Traceback" not in result.output
