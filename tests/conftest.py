"""Shared fixtures.

The shared cluster traces are read only through ``GPUCAAS_DATA`` (the Makefile points it at
``../shared/data``); tests that need them skip, saying how to get them, when it is absent.

``postgres_url`` / ``postgres_db_url`` give a real PostgreSQL server: ``GPUCAAS_TEST_POSTGRES_URL``
or a throwaway one started by ``scripts/pg-test-server``; they skip when neither is available.

Every test under ``tests/integration`` is marked ``integration`` and every test under
``tests/e2e`` is marked ``e2e`` here, by directory, so ``pytest -m "not e2e"`` runs without
the Kubernetes test bed and no test file has to remember its marker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TESTS = Path(__file__).resolve().parent
# Directory under tests/ -> the marker its tests get (registered in pyproject.toml).
DIRECTORY_MARKERS = {"integration": "integration", "e2e": "e2e"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            top = item.path.resolve().relative_to(TESTS).parts[0]
        except (ValueError, IndexError):  # not under tests/ (e.g. a path given on the command line)
            continue
        marker = DIRECTORY_MARKERS.get(top)
        if marker is not None:
            item.add_marker(marker)


def shared_data_dir() -> Path | None:
    root = Path(os.environ.get("GPUCAAS_DATA", DEFAULT_DATA))
    return root if root.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    """The shared trace folder, or a skip that says how to provide it."""
    root = shared_data_dir()
    if root is None:
        pytest.skip(
            f"shared trace data not found at {os.environ.get('GPUCAAS_DATA', DEFAULT_DATA)}; "
            "set GPUCAAS_DATA to a copy of shared/data (alibaba-gpu-v2023/...)"
        )
    return root


@pytest.fixture
def default_trace(shared_data: Path) -> Path:
    path = shared_data / "alibaba-gpu-v2023" / "openb_pod_list_default.csv"
    if not path.is_file():
        pytest.skip(f"{path} is missing; set GPUCAAS_DATA to a full copy of shared/data")
    return path


# --- A real PostgreSQL server for the store's integration tests ---------------------------------

PG_TEST_SERVER = Path(__file__).resolve().parents[1] / "scripts" / "pg-test-server"
PG_URL_ENV = "GPUCAAS_TEST_POSTGRES_URL"
PG_NO_BINARIES = 3  # pg-test-server's exit status when no server binaries are installed


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a PostgreSQL server's ``gpucaas_test`` database.

    ``GPUCAAS_TEST_POSTGRES_URL`` wins when set; otherwise a throwaway server is started with
    ``scripts/pg-test-server`` for the session. No server binaries: skip, saying how to get them.
    Any other failure fails the tests, with the script's stderr.
    """
    url = os.environ.get(PG_URL_ENV)
    if url:
        yield url
        return
    # Not pytest's tmp_path_factory: its /tmp/pytest-of-<user> is 0700, and as root the server
    # runs as an unprivileged user that must reach the directory.
    workdir = Path(tempfile.mkdtemp(prefix="gpucaas-pg-"))
    failed = False
    try:
        proc = subprocess.run(
            [str(PG_TEST_SERVER), "start", str(workdir)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode == PG_NO_BINARIES:
            pytest.skip(
                f"{proc.stderr.strip()}; or set {PG_URL_ENV} to an existing server's database URL"
            )
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or len(lines) != 1:
            failed = True
            pytest.fail(
                f"{PG_TEST_SERVER} start {workdir} failed (exit {proc.returncode}):\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}",
                pytrace=False,
            )
        yield lines[0]
    finally:
        stop = subprocess.run(
            [str(PG_TEST_SERVER), "stop", str(workdir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if stop.returncode != 0:
            sys.stderr.write(f"pg-test-server stop failed, logs kept in {workdir}:\n{stop.stderr}")
        elif not failed:  # after a failed start, keep the logs the failure message points at
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def postgres_new_db(postgres_url: str) -> Iterator[Callable[[], str]]:
    """Factory: each call creates a fresh, empty database and returns its URL.

    The databases are dropped (``WITH (FORCE)``) after the test.
    """
    # Imported here so that the rest of the suite does not need the database drivers.
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    base = make_url(postgres_url)
    # libpq takes the URL without SQLAlchemy's "+driver" part.
    admin_dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    made: list[str] = []

    def new_db() -> str:
        name = f"gpucaas_t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return base.set(database=name).render_as_string(hide_password=False)

    yield new_db
    if made:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            for name in made:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@pytest.fixture
def postgres_db_url(postgres_new_db: Callable[[], str]) -> str:
    """URL of a fresh, empty database of the test's own, dropped after the test."""
    return postgres_new_db()
