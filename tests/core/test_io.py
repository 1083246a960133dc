"""`dama.io`: the atomic file write and the folder replacement leave the old or the new content, never a mix."""

from __future__ import annotations

import pytest

from dama.io import atomic_write_json, replace_folder


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": float("nan")})  # NaN is not JSON: refused before anything is written
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.parametrize("existing", [False, True])
def test_replace_folder_puts_the_staged_folder_in_place(tmp_path, existing):
    out, staged = tmp_path / "data", tmp_path / "data.partial"
    if existing:
        out.mkdir()
        (out / "old.txt").write_text("old")
    staged.mkdir()
    (staged / "new.txt").write_text("new")
    replace_folder(staged, out)
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # neither .partial nor .old is left
