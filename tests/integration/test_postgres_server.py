"""The PostgreSQL fixtures give a real, working server, and one database per test."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, inspect, text

PG_TEST_SERVER = Path(__file__).resolve().parents[2] / "scripts" / "pg-test-server"


def _scalar(url: str, query: str) -> object:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(query)).scalar_one()
    finally:
        engine.dispose()


def _tables(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_server_answers(postgres_url: str) -> None:
    version = _scalar(postgres_url, "select version()")
    assert isinstance(version, str)
    assert "PostgreSQL" in version
    assert _scalar(postgres_url, "select current_database()") == "gpucaas_test"


def test_per_test_databases_are_isolated(
    postgres_db_url: str, postgres_new_db: Callable[[], str]
) -> None:
    other_url = postgres_new_db()
    assert other_url != postgres_db_url
    assert _tables(postgres_db_url) == []
    assert _tables(other_url) == []

    engine = create_engine(postgres_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("create table jobs (id integer primary key)"))
            conn.execute(text("insert into jobs values (1)"))
    finally:
        engine.dispose()

    assert _tables(postgres_db_url) == ["jobs"]
    assert _tables(other_url) == []  # not visible in the other database
    assert _scalar(postgres_db_url, "select count(*) from jobs") == 1


def test_stop_on_never_started_dir_is_harmless() -> None:
    with tempfile.TemporaryDirectory(prefix="gpucaas-pg-") as workdir:
        for target in (Path(workdir), Path(workdir) / "never-created"):
            proc = subprocess.run(
                [str(PG_TEST_SERVER), "stop", str(target)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout == ""
