"""The shared secret leaf: tokens are stripped and checked without ever being shown, and a file
that holds one must be its owner's alone (issue 13, points 10 and 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpucaas._secrets import clean_token, read_secret_file
from gpucaas.errors import InvalidRequest

SECRET = "gpc_" + "s3cr3t" * 7


@pytest.mark.parametrize("raw", [SECRET, f"{SECRET}\n", f"  {SECRET}\r\n", f"\t{SECRET} "])
def test_surrounding_whitespace_is_dropped(raw: str) -> None:
    assert clean_token(raw, "GPUCAAS_TOKEN") == SECRET


REFUSED = {
    "empty": ("", "is empty"),
    "only whitespace": (" \n", "is empty"),
    "non-ASCII": (SECRET + "é", "character 47 of 47 is not ASCII"),
    "inner space": (SECRET[:4] + " " + SECRET[4:], "character 5 of 47 is a space or control"),
    "NUL": (SECRET + "\0x", "is a space or control character"),
    "DEL": (SECRET + "\x7f", "is a space or control character"),
}


@pytest.mark.parametrize(("raw", "why"), REFUSED.values(), ids=REFUSED.keys())
def test_a_bad_token_is_refused_by_position_never_shown(raw: str, why: str) -> None:
    with pytest.raises(InvalidRequest, match=why) as info:
        clean_token(raw, "GPUCAAS_TOKEN")
    assert "GPUCAAS_TOKEN" in str(info.value)
    assert "s3cr3t" not in str(info.value) and "s3cr3t" not in repr(info.value)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_a_private_file_is_read_and_stripped(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    path.chmod(mode)
    assert read_secret_file(path) == SECRET


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o610, 0o601], ids=oct)
def test_a_file_open_to_group_or_others_is_refused_as_ssh_does(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "token"
    path.write_text(SECRET)
    path.chmod(mode)
    with pytest.raises(InvalidRequest) as info:
        read_secret_file(path)
    assert f"chmod 600 {path}" in str(info.value) and f"mode {mode:04o}" in str(info.value)
    assert "s3cr3t" not in str(info.value)


def test_a_symlink_is_judged_by_the_file_it_names(tmp_path: Path) -> None:
    # Kubernetes mounts a Secret's keys as symlinks into ..data; the target's mode counts.
    target = tmp_path / "real"
    target.write_text(SECRET)
    target.chmod(0o644)
    link = tmp_path / "token"
    link.symlink_to(target)
    with pytest.raises(InvalidRequest, match="chmod 600"):
        read_secret_file(link)
    target.chmod(0o400)
    assert read_secret_file(link) == SECRET


def test_a_directory_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(InvalidRequest, match="not a regular file"):
        read_secret_file(directory)
    with pytest.raises(InvalidRequest, match="cannot read the token file"):
        read_secret_file(tmp_path / "absent")


def test_a_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"a" * (10 * 1024 * 1024))
    path.chmod(0o600)
    with pytest.raises(InvalidRequest, match="over 64 KiB"):
        read_secret_file(path)
