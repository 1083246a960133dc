"""The shared JSONL reader: what every JSONL input of the package (training data, hardness input, eval files) gets."""

from __future__ import annotations

import pytest

from dama.jsonl import iter_jsonl


class MyError(ValueError):
    pass


def test_streams_objects_with_line_numbers_skipping_blank_lines_and_bom(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes('\ufeff{"a": 1}\n\n   \n{"a": 2}\n'.encode())
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, {"a": 2})]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": 1}\n{"a": \n', r"rows.jsonl:2: not valid JSON"),
        ('{"a": 1}\n[1, 2]\n', r"rows.jsonl:2: expected a JSON object, got list"),
    ],
)
def test_bad_line_raises_the_callers_error_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "rows.jsonl"
    path.write_text(text)
    rows = iter_jsonl(path, MyError)
    assert next(rows) == (1, {"a": 1})  # streamed: the good line comes before the error
    with pytest.raises(MyError, match=message):
        next(rows)


def test_hardness_input_reports_a_bad_jsonl_line(tmp_path):
    from dama.hardness.reader import InputError, open_input

    path = tmp_path / "pairs.jsonl"
    path.write_text('{"chosen": "a", "rejected": "b", "image": "x.png"}\nnot json\n')
    with pytest.raises(InputError, match=r"pairs.jsonl:2: not valid JSON"):
        list(open_input(path).iter_tables(10))
