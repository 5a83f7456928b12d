"""Atomic output and checksums: a failed build leaves nothing behind and keeps the earlier bundle."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from builder.bundle import atomic_directory, sha256_of


def test_success_replaces_previous_bundle(tmp_path: Path) -> None:
    final = tmp_path / "dist" / "app-0.1.0"
    with atomic_directory(final) as staging:
        (staging / "a.txt").write_text("one")
    with atomic_directory(final) as staging:
        (staging / "b.txt").write_text("two")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert [p.name for p in final.parent.iterdir()] == ["app-0.1.0"]


@pytest.mark.parametrize("error", [RuntimeError("export failed"), KeyboardInterrupt()])
def test_failure_keeps_earlier_bundle_and_leaves_no_partial(tmp_path: Path, error: BaseException) -> None:
    final = tmp_path / "app-0.1.0"
    with atomic_directory(final) as staging:
        (staging / "good.txt").write_text("good")
    with pytest.raises(type(error)), atomic_directory(final) as staging:
        (staging / "half.txt").write_text("half")
        raise error
    assert [p.name for p in tmp_path.iterdir()] == ["app-0.1.0"]
    assert (final / "good.txt").read_text() == "good"


def test_sha256_of_file_and_folder(tmp_path: Path) -> None:
    file = tmp_path / "m.pte"
    file.write_bytes(b"abc")
    assert sha256_of(file) == hashlib.sha256(b"abc").hexdigest()
    folder = tmp_path / "m.mlpackage"
    (folder / "Data").mkdir(parents=True)
    (folder / "Manifest.json").write_bytes(b"{}")
    (folder / "Data" / "w.bin").write_bytes(b"\x00\x01")
    expected = hashlib.sha256(b"Data/w.bin\0\x00\x01" + b"Manifest.json\0{}").hexdigest()
    assert sha256_of(folder) == expected
