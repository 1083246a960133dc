"""Streaming preference data in fixed-size chunks (a row's fields are read with `dama.row_fields`).

Inputs: a parquet file (or a folder of them, in name order), JSONL, a JSON list (parsed incrementally, never loaded
whole), or a `datasets` folder written by `save_to_disk`. `InputSource.iter_tables(n)` yields `pyarrow.Table`s of
exactly `n` rows (the last one shorter), so shard k always holds input rows [k·n, (k+1)·n) whatever the format —
which is what makes a resumed run line up with a clean one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from dama.errors import DamaError
from dama.jsonl import first_type_change, iter_jsonl


class InputError(DamaError, ValueError):
    """The input cannot be read as preference data; the message names the file and what to do."""


@dataclass
class InputSource:
    path: Path
    kind: str  # parquet | jsonl | json | datasets
    num_rows: int | None
    features: dict[str, Any] | None = None  # `datasets` features of the input columns, when known
    split: str | None = None

    def iter_tables(self, rows_per_table: int) -> Iterator[pa.Table]:
        if self.kind == "parquet":
            yield from _rechunk(self._parquet_batches(), rows_per_table)
        elif self.kind == "datasets":
            ds = _load_datasets_folder(self.path, self.split)
            yield from ds.with_format("arrow").iter(batch_size=rows_per_table)
        else:
            records = (
                (r for _, r in iter_jsonl(self.path, InputError))
                if self.kind == "jsonl"
                else _iter_json_list(self.path)
            )
            chunk: list[dict] = []
            first = 0
            for record in records:
                chunk.append(record)
                if len(chunk) == rows_per_table:
                    yield _table_from_records(chunk, self.path, first)
                    first += len(chunk)
                    chunk = []
            if chunk:
                yield _table_from_records(chunk, self.path, first)

    def _parquet_batches(self) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        for file in _parquet_files(self.path):
            # pre_buffer (the default) keeps every row group read so far alive: memory grew with the file
            yield from pq.ParquetFile(file, pre_buffer=False).iter_batches(batch_size=1024)


def _parquet_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.parquet")) if path.is_dir() else [path]


def _rechunk(batches: Iterator[pa.RecordBatch], n: int) -> Iterator[pa.Table]:
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= n:
            table = pa.Table.from_batches(pending).combine_chunks()
            yield table.slice(0, n)
            rest = table.slice(n)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending).combine_chunks()


def _table_from_records(records: list[dict], path: Path, first_row: int = 0) -> pa.Table:
    try:
        return pa.Table.from_pylist(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        where = first_type_change(records, first_row)
        if where is not None:
            raise InputError(f"{path} {where}; every row must give a field the same type") from err
        raise InputError(f"{path}: records cannot form a table (a field changes type between rows?): {err}") from err


def _iter_json_list(path: Path, chunk_chars: int = 1 << 20) -> Iterator[dict]:
    """Records of a top-level JSON list, decoded one at a time from a bounded text buffer."""
    try:
        yield from _decode_json_list(path, chunk_chars)
    except UnicodeDecodeError as err:
        raise InputError(f"{path}:{_first_non_utf8_line(path)}: not UTF-8 text ({err.reason})") from err


def _first_non_utf8_line(path: Path) -> int | str:
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return "?"


def _decode_json_list(path: Path, chunk_chars: int) -> Iterator[dict]:
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig") as handle:  # a byte-order mark before the list is tolerated
        buffer, pos, started, eof, index = "", 0, False, False, 0
        while True:
            while pos < len(buffer) and buffer[pos] in " \t\r\n,":
                pos += 1
            if not started and pos < len(buffer):
                if buffer[pos] != "[":
                    raise InputError(f"{path}: expected a JSON list of records (use .jsonl for one per line)")
                started, pos = True, pos + 1
                continue
            if pos < len(buffer) and buffer[pos] == "]":
                return
            if pos < len(buffer):
                try:
                    record, end = decoder.raw_decode(buffer, pos)
                except json.JSONDecodeError as err:
                    if eof:
                        raise InputError(f"{path}: invalid JSON in record {index} ({err})") from err
                    record = None
                if record is not None:
                    if not isinstance(record, dict):
                        raise InputError(f"{path}: record {index} is a {type(record).__name__}, not an object")
                    yield record
                    index += 1
                    pos = end
                    continue
            if eof:
                raise InputError(f"{path}: the JSON list is not closed (truncated file?)")
            more = handle.read(chunk_chars)
            eof = not more
            buffer, pos = buffer[pos:] + more, 0


def _count_lines(path: Path) -> int:
    count = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            count += block.count(b"\n")
    return count


def _load_datasets_folder(path: Path, split: str | None):
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split is None:
            split = "train" if "train" in ds else None
        if split not in ds:
            raise InputError(f"{path} holds splits {sorted(ds)}; choose one with --split")
        ds = ds[split]
    return ds


def open_input(path: str | Path, split: str | None = None) -> InputSource:
    """Recognise the input format from the path and count its rows when that is cheap."""
    try:
        return _open_input(Path(path), split)
    except pa.ArrowException as err:  # a damaged parquet file or datasets folder
        raise InputError(f"{path}: cannot be read ({type(err).__name__}: {err})") from err


def _open_input(path: Path, split: str | None) -> InputSource:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            ds = _load_datasets_folder(path, split)
            return InputSource(path, "datasets", len(ds), ds.features.to_dict(), split)
        if _parquet_files(path):
            import pyarrow.parquet as pq

            rows = sum(pq.ParquetFile(f).metadata.num_rows for f in _parquet_files(path))
            return InputSource(path, "parquet", rows, _parquet_features(_parquet_files(path)[0]))
        raise InputError(f"{path}: a folder that is neither a `datasets` save_to_disk folder nor holds *.parquet")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return InputSource(path, "parquet", pq.ParquetFile(path).metadata.num_rows, _parquet_features(path))
    if suffix in (".jsonl", ".ndjson"):
        return InputSource(path, "jsonl", None)
    if suffix == ".json":
        return InputSource(path, "json", None)
    raise InputError(f"{path}: unknown input format {suffix!r}; use .parquet, .jsonl, .json or a datasets folder")


def count_rows(source: InputSource) -> int | None:
    """Row count for the progress bar; for JSONL the line count (an upper bound when blank lines exist)."""
    if source.num_rows is not None:
        return source.num_rows
    if source.kind == "jsonl":
        return _count_lines(source.path)
    return None


def _parquet_features(path: Path) -> dict[str, Any] | None:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if b"huggingface" not in meta:
        return None
    try:
        return json.loads(meta[b"huggingface"])["info"]["features"]
    except (KeyError, ValueError, TypeError):
        return None
