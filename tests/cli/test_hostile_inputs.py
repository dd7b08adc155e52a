"""The inputs a hostile tenant or a careless operator fed the command lines (issue 13, point
10 and the token files of point 12): each ends with the documented exit status and one line
on stderr, never a traceback, and never shows a secret.

In-process with typer's CliRunner, like test_exit_codes.py. Tokens go to a stand-in API (a
stdlib HTTP server in a thread) that records the Authorization header it received and
answers 401, so a test sees both what was sent and what the user was told.
"""

from __future__ import annotations

import json
import os
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
from gpucaas.errors import EXIT_BAD_INPUT, EXIT_UNREACHABLE

runner = CliRunner()
SECRET = "gpc_" + "s3cr3t" * 7  # what no output may contain
NO_CONFIG = "/nonexistent/config.toml"


def invoke(command: typer.Typer, args: list[str], **env: str) -> Result:
    return runner.invoke(command, args, env={"GPUCAAS_CONFIG": NO_CONFIG, **env})


def assert_one_line(
    result: Result, code: int, prefix: str = "error: ", *, stream: str = "stderr"
) -> str:
    """Exit ``code``; ``stream`` is one line starting with ``prefix``; no traceback, and no
    secret anywhere in what was printed. Returns that line."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    text = result.stderr if stream == "stderr" else result.stdout
    assert "Traceback" not in result.output
    assert text.startswith(prefix), text
    assert len(text.splitlines()) == 1, text
    assert "s3cr3t" not in result.output, result.output
    return text


# -- gpucaas sim --mode inflation ----------------------------------------------------------

TRACES = {
    "header only, 5 columns": "name,cpu_milli,memory_mib,num_gpu,gpu_milli\n",
    "header only, 11 columns": (
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,"
        "creation_time,deletion_time,scheduled_time\n"
    ),
    "CPU-only pods": "name,cpu_milli,memory_mib,num_gpu,gpu_milli\np0,1000,100,0,0\np1,8,1,0,0\n",
}


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("trace", TRACES.values(), ids=TRACES.keys())
def test_sim_inflation_without_gpu_pods_exits_2(tmp_path: Path, trace: str, as_json: bool) -> None:
    # Was ZeroDivisionError (the progress estimate divides by the mean GPUs per pod), and with
    # --json, where no estimate is made, the sampling loop would never reach its target.
    path = tmp_path / "trace.csv"
    path.write_text(trace)
    args = ["sim", "--trace", str(path), "--mode", "inflation", "--nodes", "2"]
    line = assert_one_line(invoke(app, args + (["--json"] if as_json else [])), EXIT_BAD_INPUT)
    assert "no pod that asks for GPUs" in line and "trace.csv" in line


# -- fmctl: partition ids ------------------------------------------------------------------

BAD_IDS = {
    "activate -1": ["activate", "--", "-1"],
    "activate 2^32": ["activate", "4294967296"],
    "deactivate -1": ["deactivate", "--", "-1"],
    "deactivate 2^64": ["deactivate", str(2**64)],
    "set-activated 20 digits": ["set-activated", "1,99999999999999999999"],
    "set-activated 5000 digits": ["set-activated", "1," + "9" * 5000],
}


@pytest.mark.parametrize("args", BAD_IDS.values(), ids=BAD_IDS.keys())
@pytest.mark.parametrize("backend", ["simulated", "fm-controller"])
def test_fmctl_partition_ids_out_of_range_exit_2(
    tmp_path: Path, backend: str, args: list[str]
) -> None:
    # Was exit 1: FM_ST_BADPARAM from the simulated FM, a ValueError traceback from protobuf
    # on the way to the fm-controller. The id is refused before any backend is opened, so
    # the controller's absent socket is never dialled.
    where = (
        ["--simulated", str(tmp_path / "fm.json")]
        if backend == "simulated"
        else ["--address", str(tmp_path / "absent.sock")]
    )
    line = assert_one_line(invoke(fmctl_app, [*where, *args]), EXIT_BAD_INPUT, "fmctl: ")
    assert "out of range" in line and "0 to 4294967295" in line
    assert len(line) < 300  # a 5000-digit id is shortened, not printed whole


def test_fmctl_accepts_the_largest_id_and_lets_fabric_manager_judge_it(tmp_path: Path) -> None:
    result = invoke(fmctl_app, ["--simulated", str(tmp_path / "fm.json"), "activate", "4294967295"])
    assert result.exit_code == 1 and "FM_ST_BADPARAM" in result.stderr  # FM's refusal, exit 1


# -- gpucaas node cdi validate -------------------------------------------------------------

DOCUMENTS = {
    "100k nested lists": ("spec.json", "[" * 100_000 + "]" * 100_000),
    "100k nested objects": ("spec.json", '{"a":' * 100_000 + "1" + "}" * 100_000),
    "100k nested YAML lists": ("spec.yaml", "[" * 100_000 + "]" * 100_000),
    "900 nested, parseable": (
        "spec.json",
        '{"cdiVersion":"0.6.0","kind":"a.com/b","devices":[{"name":"d","containerEdits":'
        '{"env":' + "[" * 900 + "]" * 900 + "}}]}",
    ),
    "5000-digit number": ("spec.json", '{"cdiVersion": ' + "9" * 5000 + "}"),
    "5000-digit YAML number": ("spec.yaml", "cdiVersion: " + "9" * 5000 + "\n"),
}


@pytest.mark.parametrize(("name", "text"), DOCUMENTS.values(), ids=DOCUMENTS.keys())
def test_cdi_validate_of_a_hostile_document_exits_2(tmp_path: Path, name: str, text: str) -> None:
    # Was RecursionError (exit 1, a traceback) for the deep ones; ValueError for the number.
    spec = tmp_path / name
    spec.write_text(text)
    result = invoke(app, ["node", "cdi", "validate", str(spec)])
    line = assert_one_line(result, EXIT_BAD_INPUT, stream="stdout")  # violations go to stdout
    assert "nested more than 64 levels" in line or "over 4300 digits" in line


# -- API tokens ------------------------------------------------------------------------------


class RecordingApi:
    """Answers every request 401 and keeps the Authorization header it was sent."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.seen.append(self.headers.get("Authorization"))
                body = json.dumps(
                    {"error": {"type": "Unauthenticated", "message": "unknown token"}}
                ).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def api() -> Iterator[RecordingApi]:
    recorder = RecordingApi()
    thread = threading.Thread(target=recorder.server.serve_forever, daemon=True)
    thread.start()
    yield recorder
    recorder.server.shutdown()
    recorder.server.server_close()


def config_file(tmp_path: Path, token: str, mode: int = 0o600) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"token = {json.dumps(token)}\n", encoding="utf-8")
    path.chmod(mode)
    return path


BAD_TOKENS = {
    "non-ASCII": (SECRET[:10] + "é" + SECRET[10:], "not ASCII"),
    "inner space": (SECRET[:10] + " " + SECRET[10:], "a space or control character"),
    "inner newline": (SECRET[:10] + "\n" + SECRET[10:], "a space or control character"),
    "escape character": (SECRET + "\x1b[2J", "a space or control character"),
}


@pytest.mark.parametrize("where", ["flag", "env", "config"])
@pytest.mark.parametrize(("token", "why"), BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_token_that_is_not_printable_ascii_exits_2_without_showing_it(
    api: RecordingApi, tmp_path: Path, where: str, token: str, why: str
) -> None:
    # Was a UnicodeEncodeError traceback (non-ASCII) or "cannot reach the gpucaas API ...
    # (Illegal header value b'Bearer gpc_...')": the secret printed, the network blamed.
    args, env = ["ps", "--url", api.url], {}
    if where == "flag":
        args += ["--token", token]
    elif where == "env":
        env["GPUCAAS_TOKEN"] = token
    else:
        env["GPUCAAS_CONFIG"] = str(config_file(tmp_path, token))
    line = assert_one_line(invoke(app, args, **env), EXIT_BAD_INPUT)
    assert why in line and "copy it again" in line
    assert api.seen == []  # refused before anything was sent


@pytest.mark.parametrize("where", ["flag", "env", "config"])
def test_a_token_with_surrounding_whitespace_is_stripped(
    api: RecordingApi, tmp_path: Path, where: str
) -> None:
    token = f"  {SECRET}\r\n"  # `export GPUCAAS_TOKEN="$(cat file)"` from a CRLF file, say
    args, env = ["ps", "--url", api.url], {}
    if where == "flag":
        args += ["--token", token]
    elif where == "env":
        env["GPUCAAS_TOKEN"] = token
    else:
        env["GPUCAAS_CONFIG"] = str(config_file(tmp_path, token))
    # The server's own answer (401: exit 2), not "cannot reach the API" (exit 3).
    line = assert_one_line(invoke(app, args, **env), EXIT_BAD_INPUT)
    assert line == "error: unknown token\n"
    assert api.seen == [f"Bearer {SECRET}"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620], ids=oct)
def test_a_config_file_with_a_token_open_to_others_is_refused(
    api: RecordingApi, tmp_path: Path, mode: int
) -> None:
    path = config_file(tmp_path, SECRET, mode)
    line = assert_one_line(invoke(app, ["ps", "--url", api.url], GPUCAAS_CONFIG=str(path)), 2)
    assert f"chmod 600 {path}" in line and f"{mode:04o}" in line
    assert api.seen == []


def test_a_config_file_without_a_token_may_be_world_readable(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('url = "http://127.0.0.1:1"\n')
    path.chmod(0o644)
    result = invoke(app, ["ps", "--token", SECRET], GPUCAAS_CONFIG=str(path))
    line = assert_one_line(result, EXIT_UNREACHABLE)  # it read the URL and tried it
    assert "http://127.0.0.1:1" in line


URLS = {
    "no scheme": "127.0.0.1:8080",
    "ftp": "ftp://127.0.0.1/",
    "bad port": "http://[::1",
    "no host": "http://",
}


@pytest.mark.parametrize("url", URLS.values(), ids=URLS.keys())
def test_an_unusable_api_url_exits_2(url: str) -> None:
    # Was exit 3 ("cannot reach", blaming the network) or an httpx.InvalidURL traceback.
    line = assert_one_line(invoke(app, ["ps", "--url", url, "--token", SECRET]), EXIT_BAD_INPUT)
    assert "API URL" in line


def script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run_until_refused(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """A command that serves until stopped when it accepts its input: run it as a process with
    a deadline, so a regression fails the test instead of hanging it."""
    try:
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**os.environ, "GPUCAAS_CONFIG": NO_CONFIG, **env},
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{args[:3]} accepted the input and kept serving")


def assert_refused_line(done: subprocess.CompletedProcess[str], prefix: str = "error: ") -> str:
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert "Traceback" not in done.stderr and "s3cr3t" not in done.stderr + done.stdout
    assert done.stderr.startswith(prefix) and len(done.stderr.splitlines()) == 1, done.stderr
    return done.stderr


def test_up_refuses_an_admin_token_that_is_not_ascii_without_showing_it(tmp_path: Path) -> None:
    # The token is checked before the executor or anything else is chosen.
    done = run_until_refused(
        [script("gpucaas"), "up", "--state-dir", str(tmp_path / "state"), "--nodes", "1",
         "--listen", "127.0.0.1:0"],
        GPUCAAS_ADMIN_TOKEN=SECRET + "é",
    )  # fmt: skip
    line = assert_refused_line(done)
    assert "GPUCAAS_ADMIN_TOKEN" in line and "not ASCII" in line
    assert not (tmp_path / "state").exists()  # refused before anything was made


# -- token files: fabric serve, fmctl ------------------------------------------------------


def fmctl_list(path: Path, tmp: Path) -> list[str]:
    return ["--token-file", str(path), "--address", str(tmp / "absent.sock"), "list"]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=oct)
def test_fmctl_refuses_a_token_file_open_to_others(tmp_path: Path, mode: int) -> None:
    # Was accepted silently (issue 13, point 12).
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    path.chmod(mode)
    line = assert_one_line(invoke(fmctl_app, fmctl_list(path, tmp_path)), 2, "fmctl: ")
    assert f"chmod 600 {path}" in line and f"{mode:04o}" in line


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604], ids=oct)
def test_fabric_serve_refuses_a_token_file_open_to_others(tmp_path: Path, mode: int) -> None:
    # Was accepted silently: the daemon started serving with a token any local user reads.
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    path.chmod(mode)
    done = run_until_refused(
        [script("gpucaas"), "fabric", "serve", "--backend", "simulated",
         "--token-file", str(path), "--state-dir", str(tmp_path / "state"),
         "--listen", str(tmp_path / "fm.sock"), "--http-listen", "127.0.0.1:0"],
    )  # fmt: skip
    line = assert_refused_line(done)
    assert f"chmod 600 {path}" in line and f"{mode:04o}" in line
    assert not (tmp_path / "fm.sock").exists()  # it never started listening


def test_a_private_token_file_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    line = assert_one_line(
        invoke(fmctl_app, fmctl_list(path, tmp_path)), 3, "fmctl: "
    )  # read it, dialled
    assert "cannot reach the fm-controller" in line


@pytest.mark.parametrize(
    ("content", "why"),
    [(SECRET + "é\n", "not ASCII"), (b"\xff\xfe" + SECRET.encode(), "not UTF-8"), (b"", "empty")],
    ids=["non-ASCII", "not UTF-8", "empty"],
)
def test_a_bad_token_file_exits_2_without_showing_it(
    tmp_path: Path, content: str | bytes, why: str
) -> None:
    path = tmp_path / "token"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    path.chmod(0o600)
    line = assert_one_line(invoke(fmctl_app, fmctl_list(path, tmp_path)), 2, "fmctl: ")
    assert why in line and str(path) in line


def test_an_unreadable_token_file_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(SECRET)
    path.chmod(0o000)
    if os.access(path, os.R_OK):
        pytest.skip(
            "running as root: mode 000 does not stop root reading the file; "
            "run the tests as a non-root user to check it"
        )
    line = assert_one_line(invoke(fmctl_app, fmctl_list(path, tmp_path)), 2, "fmctl: ")
    assert "cannot read the token file" in line
