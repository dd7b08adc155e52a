"""Issue 13, item 4: revoking every admin token locked the operator out for good (a restart
with GPUCAAS_ADMIN_TOKEN still answered 401). Now ``gpucaas up`` with the variable restores
access, and says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from gpucaas.control import ControlPlane, ControlPlaneConfig, Unauthenticated

SECRET = "gpc_" + "r" * 43


def plane(state_dir: Path, admin_token: str | None = None) -> ControlPlane:
    return ControlPlane(
        ControlPlaneConfig(
            state_dir=state_dir, nodes=1, executor="process", admin_token=admin_token
        )
    )


def revoke_all_admin_tokens(p: ControlPlane) -> None:
    # The API refuses the last one now (409); an older version, or SQL by hand, did not.
    with p.store.engine.begin() as conn:
        conn.execute(text("UPDATE tokens SET revoked_at = 1 WHERE tenant IS NULL"))


@pytest.mark.parametrize("same_token", [True, False], ids=["revoked-token-again", "new-token"])
def test_a_restart_with_the_admin_token_restores_access(tmp_path: Path, same_token: bool) -> None:
    first = plane(tmp_path, SECRET)
    try:
        first.bootstrap("http://x")
        revoke_all_admin_tokens(first)
        with pytest.raises(Unauthenticated, match="revoked"):
            first.store.authenticate(SECRET)
    finally:
        first.stop()
    secret = SECRET if same_token else "gpc_" + "n" * 43
    again = plane(tmp_path, secret)
    try:
        assert again.bootstrap("http://x") is None
        assert again.store.authenticate(secret).admin
        assert again.notice is not None and "restored" in again.notice
        assert secret not in again.notice
    finally:
        again.stop()


def test_a_restart_without_the_variable_says_how_to_get_back_in(tmp_path: Path) -> None:
    first = plane(tmp_path)
    try:
        assert first.bootstrap("http://x") is not None  # made the demo tenant
        revoke_all_admin_tokens(first)
    finally:
        first.stop()
    again = plane(tmp_path)
    try:
        assert again.bootstrap("http://x") is None  # no second demo tenant, no crash
        assert again.notice is not None and "GPUCAAS_ADMIN_TOKEN" in again.notice
        assert not again.store.has_admin_token()
    finally:
        again.stop()


def test_an_active_admin_token_is_left_alone(tmp_path: Path) -> None:
    """With another admin token active, a revoked GPUCAAS_ADMIN_TOKEN stays revoked (it may
    have leaked)."""
    first = plane(tmp_path, SECRET)
    try:
        first.bootstrap("http://x")
        first.store.create_token(None, "second")
        row = next(t for t in first.store.tokens() if t["label"] == "from GPUCAAS_ADMIN_TOKEN")
        first.store.revoke_token(row["id"])
    finally:
        first.stop()
    again = plane(tmp_path, SECRET)
    try:
        again.bootstrap("http://x")
        assert again.notice is None
        with pytest.raises(Unauthenticated, match="revoked"):
            again.store.authenticate(SECRET)
    finally:
        again.stop()
