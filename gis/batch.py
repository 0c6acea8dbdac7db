"""Batch geocoding of CSV and Parquet files in chunks of bounded size (pure: no Django import).

`geocode_file` reads the input in record batches of at most ``chunk_rows`` rows, geocodes each batch's
lon/lat with `TerritoryIndex.locate_many` and appends it to the output, so memory stays flat however
large the file is. Every input column is kept as it was read (a CSV's columns as text, byte for byte; a
Parquet file's with their types) and seven columns are added: ``district_code``, ``street_code``,
``community_code``, ``grid_code``, ``block_code`` (strings; empty/null when unresolved) and
``near_boundary``, ``snapped`` (booleans; false when unresolved).

Rows whose lon/lat is missing, not a number or out of range are kept with empty codes and counted in
the report with the first few row numbers (1-based, the header not counted); so are points farther than
the snap tolerance from every grid ("outside").

Engines: ``single`` runs in this process: pyarrow parses ahead, numpy geocodes in this thread and a
writer thread encodes the previous chunk. ``dask`` cuts the input into pieces (byte ranges of about
``partition_bytes`` of a CSV, cut at line ends; row ranges of at most ``chunk_rows`` rows of a Parquet
row group) and runs a dask graph of them on dask's threaded scheduler with ``workers`` threads, which
share the one index in memory (no worker processes to start, no pickled index, no part files to join):
a task per piece reads and geocodes it, and a chain of write tasks appends the pieces' output to the
output file in input order. A piece is read only once the piece ``2 * workers`` places before it is
written, so memory stays bounded by a few pieces. Almost all of the work (Arrow parsing and compute,
numpy) releases the GIL, so the threads use the cores in parallel. The output is the single engine's
(a CSV byte for byte). A CSV piece boundary is a line end, so the dask engine needs CSV files without
line breaks inside quoted values (as dask's own read_csv does) and cannot split a gzip file.

Geocoding a chunk creates no Python object per row: `TerritoryIndex.locate_many` gives grid and block
positions, Arrow's ``take`` maps them to the code columns, and arrays are built from numpy buffers
(``pa.array`` would also import pandas, a second or more, on its first call).

dask-geopandas is not used: the index takes lon/lat arrays, and making a shapely Point per row only to
take its x and y back would cost about as much as geocoding itself.

The output is written to a hidden temporary file beside it and renamed at the end, so a failed run never
leaves a truncated file under the requested name.
"""

from __future__ import annotations

import csv
import ctypes
import gzip
import io
import itertools
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm import tqdm

from gis.datums import canonical_crs, to_wgs84_many
from gis.index import TerritoryIndex

__all__ = [
    "ADDED_COLUMNS",
    "CODE_COLUMNS",
    "DEFAULT_CHUNK_ROWS",
    "ENGINES",
    "FLAG_COLUMNS",
    "BatchError",
    "BatchReport",
    "geocode_file",
    "tune_allocator",
]

CODE_COLUMNS: Final = ("district_code", "street_code", "community_code", "grid_code", "block_code")
FLAG_COLUMNS: Final = ("near_boundary", "snapped")
ADDED_COLUMNS: Final = CODE_COLUMNS + FLAG_COLUMNS
ENGINES: Final = ("single", "dask")
DEFAULT_CHUNK_ROWS: Final = 262_144
MAX_BAD_EXAMPLES: Final = 10
# Bytes of CSV text per dask piece: a task's fixed cost (a reader, a few dask callbacks) is well under a
# millisecond, and a piece's output waits in memory for its turn to be written, so pieces stay small;
# many pieces also keep both threads busy to the end.
DEFAULT_PARTITION_BYTES: Final = 4 * 2**20
# Pieces that may be read or geocoded ahead of the last one written, per worker thread.
_WINDOW_PER_WORKER: Final = 2
# The CSV reader's memory is a few blocks, whatever the file size; larger blocks bought no speed.
_CSV_BLOCK: Final = 1 * 2**20
_PARQUET_COMPRESSION: Final = "zstd"

_Kind = Literal["csv", "parquet"]


# glibc mallopt(3) parameters.
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_MMAP_THRESHOLD: Final = 32 * 2**20  # glibc's largest on 64-bit
_TRIM_THRESHOLD: Final = 2**30


def tune_allocator() -> bool:
    """Let the C heap keep freed memory for reuse instead of returning it to the kernel (glibc only).

    Geocoding makes numpy temporaries of a few MiB per chunk. With glibc's defaults each is a fresh
    mapping or is trimmed off the heap when freed, so every 4 KiB page is faulted in again on the next
    chunk: 540,000 page faults and about half the CPU time of a 2,000,000-row run were spent so
    (measured with pyarrow 26, numpy 2.4, glibc 2.36). Raising the mmap threshold to
    glibc's maximum (32 MiB) and the trim threshold to 1 GiB keeps that memory in the process, which
    then stays at its peak size until it exits. This is process-wide, so the geocode_batch command and
    the benchmark call it (before `geocode_file`); a long-lived process need not. Returns whether it
    applied (False where the C library is not glibc).
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    mmap_set = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
    trim_set = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    return bool(mmap_set and trim_set)


class BatchError(ValueError):
    """A batch job cannot run or failed on its input; the message is one line naming the cause."""


@dataclass(frozen=True, slots=True)
class _Format:
    kind: _Kind
    gzip: bool = False


def _file_format(path: Path, role: str) -> _Format:
    """The format a file name promises, or BatchError naming the accepted extensions."""
    name = path.name.lower()
    if name.endswith(".csv"):
        return _Format("csv")
    if name.endswith(".csv.gz"):
        return _Format("csv", gzip=True)
    if name.endswith((".parquet", ".pq")):
        return _Format("parquet")
    raise BatchError(f"{role} {path}: unknown file extension; expected .csv, .csv.gz, .parquet or .pq")


@dataclass(frozen=True, slots=True)
class _Source:
    """What a worker needs to read (a part of) the input; small and picklable."""

    path: Path
    fmt: _Format
    schema: pa.Schema
    lon_index: int
    lat_index: int
    size_bytes: int
    num_rows: int | None
    header: bytes
    encoding: str


@dataclass(slots=True)
class BatchReport:
    """Counts and timings of one batch run (rows are input rows; seconds are wall-clock)."""

    engine: str = "single"
    workers: int = 1
    partitions: int = 1  # dask pieces (1 for the single engine)
    rows: int = 0
    chunks: int = 0
    max_chunk_rows: int = 0
    resolved: int = 0
    snapped: int = 0
    near_boundary: int = 0
    outside: int = 0
    bad: int = 0
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    read_seconds: float = 0.0
    geocode_seconds: float = 0.0
    write_seconds: float = 0.0
    cpu_seconds: float = 0.0
    task_seconds: float = 0.0
    compute_seconds: float = 0.0
    peak_arrow_bytes: int = 0

    def merge(self, other: BatchReport, *, row_offset: int = 0) -> None:
        """Add a piece's counts into this report; its row numbers start after row_offset rows."""
        self.rows += other.rows
        self.chunks += other.chunks
        self.max_chunk_rows = max(self.max_chunk_rows, other.max_chunk_rows)
        self.resolved += other.resolved
        self.snapped += other.snapped
        self.near_boundary += other.near_boundary
        self.outside += other.outside
        self.bad += other.bad
        room = max(MAX_BAD_EXAMPLES - len(self.bad_rows), 0)
        self.bad_rows.extend((row + row_offset, problem) for row, problem in other.bad_rows[:room])
        self.read_seconds += other.read_seconds
        self.geocode_seconds += other.geocode_seconds
        self.write_seconds += other.write_seconds
        self.cpu_seconds += other.cpu_seconds
        self.task_seconds += other.seconds
        self.peak_arrow_bytes = max(self.peak_arrow_bytes, other.peak_arrow_bytes)

    @property
    def bad_examples(self) -> list[str]:
        """The first bad rows as "row N: problem" (N 1-based, the header not counted)."""
        return [f"row {row}: {problem}" for row, problem in self.bad_rows]

    @property
    def points_per_second(self) -> float:
        """End-to-end input rows per wall-clock second."""
        return self.rows / self.seconds if self.seconds > 0 else math.inf

    @property
    def points_per_cpu_second(self) -> float:
        """Input rows per CPU-second of the process(es): the per-core figure."""
        return self.rows / self.cpu_seconds if self.cpu_seconds > 0 else math.inf

    @property
    def geocode_points_per_second(self) -> float:
        """Rows per second spent inside `TerritoryIndex.geocode_many` (summed over workers)."""
        return self.rows / self.geocode_seconds if self.geocode_seconds > 0 else math.inf

    def summary_lines(self) -> list[str]:
        """The report as a few human-readable lines."""
        lines = [
            f"rows: {self.rows:,} in {self.chunks:,} chunk(s) of at most {self.max_chunk_rows:,} rows "
            f"({self.engine} engine, {self.workers} worker(s), {self.partitions} piece(s))",
            f"resolved: {self.resolved:,} (snapped {self.snapped:,}, "
            f"near a boundary {self.near_boundary:,}); "
            f"outside the territory: {self.outside:,}; bad lon/lat: {self.bad:,}",
        ]
        lines.extend(f"  bad {example}" for example in self.bad_examples)
        if self.bad > len(self.bad_examples):
            lines.append(f"  … and {self.bad - len(self.bad_examples):,} more bad row(s)")
        lines.append(
            f"time: {self.seconds:.2f} s end to end = {self.points_per_second:,.0f} points/s "
            f"({self.cpu_seconds:.2f} CPU-s = {self.points_per_cpu_second:,.0f} points per CPU-second"
            f"{', summed over workers' if self.workers > 1 else ''})"
        )
        lines.append(
            f"stages: geocode_many {self.geocode_seconds:.2f} s = {self.geocode_points_per_second:,.0f} "
            f"points/s; waiting for input {self.read_seconds:.2f} s; writing {self.write_seconds:.2f} s "
            + ("(summed over the threads)" if self.engine == "dask" else "(in a writer thread, overlapping)")
        )
        if self.engine == "dask":
            busy = self.task_seconds / (self.compute_seconds * self.workers) if self.compute_seconds else 0.0
            lines.append(
                f"dask: {self.partitions} piece(s) on {self.workers} thread(s) in "
                f"{self.compute_seconds:.2f} s ({self.task_seconds:.2f} s inside geocoding tasks, so the "
                f"threads were {busy:.0%} busy with them; the rest is the ordered writes, scheduling and "
                "waiting for a core)"
            )
        return lines


# ---------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------


def _open_text(path: Path, fmt: _Format, encoding: str) -> Any:
    # utf-8-sig drops a byte order mark, which Excel puts at the start of "CSV UTF-8" files.
    codec = "utf-8-sig" if encoding.replace("-", "").replace("_", "").lower() == "utf8" else encoding
    if fmt.gzip:
        return gzip.open(path, "rt", encoding=codec, newline="")
    return open(path, encoding=codec, newline="")


def _csv_header(path: Path, fmt: _Format, encoding: str) -> list[str]:
    try:
        with _open_text(path, fmt, encoding) as handle:
            header = next(csv.reader(handle), None)
    except UnicodeDecodeError as exc:
        raise BatchError(
            f"input {path}: the header row is not {encoding} ({exc.reason}); "
            "pass the file's encoding, e.g. gbk"
        ) from None
    except (LookupError, OSError, csv.Error) as exc:
        raise BatchError(f"input {path}: cannot read the header row ({encoding}): {exc}") from None
    if not header:
        raise BatchError(f"input {path}: empty file, expected a header row with lon and lat")
    return header


def _open_source(path: Path, *, lon_column: str, lat_column: str, encoding: str) -> _Source:
    """Check the input file and describe it, or raise BatchError."""
    fmt = _file_format(path, "input")
    if not path.is_file():
        raise BatchError(f"input file not found: {path}")
    header = b""
    num_rows: int | None = None
    if fmt.kind == "csv":
        names = _csv_header(path, fmt, encoding)
        schema = pa.schema([pa.field(name, pa.string()) for name in names])
        if not fmt.gzip:
            with open(path, "rb") as raw:
                header = raw.readline()
    else:
        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise BatchError(f"input {path}: not a readable Parquet file: {exc}") from None
        schema = parquet.schema_arrow
        num_rows = parquet.metadata.num_rows
        names = schema.names
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise BatchError(f"input {path}: duplicate column name {name!r}")
        seen.add(name)
    for column in (lon_column, lat_column):
        if column not in seen:
            raise BatchError(
                f"input {path}: no column {column!r}; the columns are: {', '.join(names) or '(none)'}"
            )
        kind = schema.field(column).type
        if fmt.kind == "parquet" and not _numeric_or_text(kind):
            raise BatchError(f"input {path}: column {column!r} has type {kind}, expected numbers or text")
    clash = [name for name in ADDED_COLUMNS if name in seen]
    if clash:
        raise BatchError(
            f"input {path}: already has column(s) {', '.join(clash)}, which the output adds; "
            "rename or drop them first"
        )
    return _Source(
        path=path,
        fmt=fmt,
        schema=schema,
        lon_index=schema.get_field_index(lon_column),
        lat_index=schema.get_field_index(lat_column),
        size_bytes=path.stat().st_size,
        num_rows=num_rows,
        header=header,
        encoding=encoding,
    )


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return True
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind))


def _numeric_or_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    )


def _csv_reader(source: _Source, stream: Any, *, use_threads: bool = True) -> pacsv.CSVStreamingReader:
    read_options = pacsv.ReadOptions(block_size=_CSV_BLOCK, encoding=source.encoding, use_threads=use_threads)
    # Every column as text: type inference from the first block would fail on a later block that
    # does not fit, and would rewrite values such as "007" or "1.50" on their way to the output.
    convert_options = pacsv.ConvertOptions(
        column_types={f.name: pa.string() for f in source.schema}, strings_can_be_null=False
    )
    parse_options = pacsv.ParseOptions(newlines_in_values=True)
    try:
        return pacsv.open_csv(
            stream, read_options=read_options, parse_options=parse_options, convert_options=convert_options
        )
    except pa.ArrowException as exc:
        raise BatchError(_arrow_message(source.path, exc)) from None


def _arrow_message(path: Path, exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if "UTF8" in text or "utf8" in text or "decode" in text:
        text += " (pass the file's encoding, e.g. gbk)"
    return f"input {path}: {text}"


def _sliced(batches: Iterator[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        for start in range(0, batch.num_rows, chunk_rows):
            yield batch.slice(start, chunk_rows)


def _guard(source: _Source, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Re-raise reader errors (bad encoding, ragged rows) as BatchError naming the file."""
    try:
        yield from batches
    except pa.ArrowException as exc:
        raise BatchError(_arrow_message(source.path, exc)) from None


def _read_whole(source: _Source, chunk_rows: int, position: list[int]) -> Iterator[pa.RecordBatch]:
    """Batches of the whole input; position[0] follows the bytes (CSV) or rows (Parquet) consumed."""
    if source.fmt.kind == "parquet":
        parquet = pq.ParquetFile(source.path)
        for batch in _guard(source, parquet.iter_batches(batch_size=chunk_rows, use_threads=True)):
            position[0] += batch.num_rows
            yield batch
        return
    # A Python file, not pa.OSFile: through an OSFile pyarrow keeps about 36 blocks in flight, through a
    # Python file a handful, at the same speed (measured with pyarrow 26).
    with open(source.path, "rb") as raw:
        stream: Any = pa.CompressedInputStream(raw, "gzip") if source.fmt.gzip else raw
        reader = _csv_reader(source, stream)
        for batch in _guard(source, _sliced(iter(reader), chunk_rows)):
            position[0] = raw.tell()
            yield batch


# ---------------------------------------------------------------------------------------------
# Geocoding one chunk
# ---------------------------------------------------------------------------------------------


def _buffer_array(kind: pa.DataType, values: np.ndarray) -> pa.Array:
    """A non-null Arrow array of a fixed-width type over a numpy array's memory (no copy)."""
    return pa.Array.from_buffers(kind, values.size, [None, pa.py_buffer(values)])


def _bool_array(flags: np.ndarray) -> pa.Array:
    """A non-null Arrow boolean array from a numpy one (bit-packed, no Python objects)."""
    return pa.Array.from_buffers(
        pa.bool_(), flags.size, [None, pa.py_buffer(np.packbits(flags, bitorder="little"))]
    )


def _string_array(values: list[str | None]) -> pa.Array:
    """An Arrow string array built from its buffers (None is null)."""
    data = [b"" if v is None else v.encode("utf-8") for v in values]
    offsets = np.zeros(len(data) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, data), dtype=np.int64, count=len(data)), out=offsets[1:])
    valid = np.fromiter((v is not None for v in values), dtype=bool, count=len(values))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        pa.string(),
        len(data),
        [bitmap, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))],
        null_count=len(values) - int(np.count_nonzero(valid)),
    )


def _validity(column: pa.Array) -> np.ndarray:
    """Which items of an Arrow array are not null, as a numpy boolean array."""
    if column.null_count == 0:
        return np.ones(len(column), dtype=bool)
    bits = np.frombuffer(column.buffers()[0], dtype=np.uint8)
    count = column.offset + len(column)
    return np.unpackbits(bits, count=count, bitorder="little")[column.offset :].astype(bool)


def _float_values(column: pa.Array) -> np.ndarray:
    """A float64 Arrow array as a numpy array, NaN where null (Array.to_numpy would import pandas)."""
    if len(column) == 0:
        return np.zeros(0, dtype=np.float64)
    data = np.frombuffer(column.buffers()[1], dtype=np.float64, count=column.offset + len(column))
    values = data[column.offset :]
    if column.null_count:
        values = np.where(_validity(column), values, np.nan)
    return values


def _blank_as_null(column: pa.Array) -> pa.Array:
    """A string array with its empty strings made null (same buffers, a new validity bitmap)."""
    kind = np.int64 if pa.types.is_large_string(column.type) else np.int32
    buffers = column.buffers()
    offsets = np.frombuffer(buffers[1], dtype=kind, count=column.offset + len(column) + 1)
    keep = np.zeros(column.offset + len(column), dtype=bool)
    keep[column.offset :] = (np.diff(offsets[column.offset :]) > 0) & _validity(column)
    return pa.Array.from_buffers(
        column.type,
        len(column),
        [pa.py_buffer(np.packbits(keep, bitorder="little")), buffers[1], buffers[2]],
        offset=column.offset,
    )


def _as_float(column: pa.Array) -> np.ndarray:
    """A coordinate column as float64 with NaN for missing or unparsable values."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            column = pc.cast(column, pa.float64())
        except pa.ArrowInvalid:
            # Blanks and empty cells are the usual culprits and stay vectorised; a chunk with other junk
            # is parsed value by value, the junk becoming NaN to be reported.
            trimmed = _blank_as_null(pc.utf8_trim_whitespace(column))
            try:
                column = pc.cast(trimmed, pa.float64())
            except pa.ArrowInvalid:
                return np.array([_parse_float(v) for v in trimmed.to_pylist()], dtype=np.float64)
    else:
        column = pc.cast(column, pa.float64())
    return _float_values(column)


def _parse_float(value: str | None) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except ValueError:
        return math.nan


def _problem(field: str, raw: Any, value: float, limit: float) -> str | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return f"{field} is missing"
    if math.isnan(value):
        return f"{field} is not a number: {str(raw)[:40]!r}"
    if not -limit <= value <= limit:
        return f"{field} {str(raw)[:40]} is out of range [-{limit:g}, {limit:g}]"
    return None


@dataclass(frozen=True, slots=True)
class _Job:
    """What geocoding a chunk needs: the index, its code columns in Arrow, the input and the datum."""

    index: TerritoryIndex
    source: _Source
    out_schema: pa.Schema
    crs: str
    # Per CODE_COLUMNS: the codes by position + 1 (item 0 is null, for position -1 = none).
    codes: tuple[pa.Array, ...]

    @classmethod
    def create(cls, index: TerritoryIndex, source: _Source, crs: str) -> _Job:
        codes = []
        for name in CODE_COLUMNS:
            table = index.code_table(name)  # last item None, for position -1
            codes.append(_string_array([None, *table[:-1].tolist()]))
        return cls(index, source, _output_schema(source), crs, tuple(codes))


def _geocode_batch(job: _Job, batch: pa.RecordBatch, first_row: int, report: BatchReport) -> pa.RecordBatch:
    """Geocode one batch into the output batch (input columns + added ones) and count into report."""
    source = job.source
    n = batch.num_rows
    lon = _as_float(batch.column(source.lon_index))
    lat = _as_float(batch.column(source.lat_index))
    valid = (np.abs(lon) <= 180.0) & (np.abs(lat) <= 90.0)  # NaN fails both
    n_valid = int(np.count_nonzero(valid))
    all_valid = n_valid == n
    if not all_valid:
        report.bad += n - n_valid
        for i in np.flatnonzero(~valid)[: max(MAX_BAD_EXAMPLES - len(report.bad_rows), 0)]:
            i = int(i)
            problems = [
                p
                for p in (
                    _problem("lon", batch.column(source.lon_index)[i].as_py(), float(lon[i]), 180.0),
                    _problem("lat", batch.column(source.lat_index)[i].as_py(), float(lat[i]), 90.0),
                )
                if p
            ]
            report.bad_rows.append((first_row + i + 1, "; ".join(problems)))
        lon, lat = lon[valid], lat[valid]
    if job.crs not in ("wgs84", "cgcs2000"):
        lon, lat = to_wgs84_many(lon, lat, job.crs)
    t0 = time.perf_counter()
    result = job.index.locate_many(lon, lat, with_block=True)
    report.geocode_seconds += time.perf_counter() - t0
    unresolved = int(np.count_nonzero(result["grid"] < 0))
    report.outside += unresolved
    report.resolved += n_valid - unresolved
    report.snapped += int(np.count_nonzero(result["snapped"]))
    report.near_boundary += int(np.count_nonzero(result["near_boundary"]))
    positions: dict[str, pa.Array] = {}
    for key in ("grid", "block"):
        take = np.zeros(n, dtype=np.int32)  # 0 = the null code, also for bad rows
        if all_valid:
            np.add(result[key], 1, out=take)
        else:
            take[valid] = result[key] + 1
        positions[key] = _buffer_array(pa.int32(), take)
    added: list[pa.Array] = [
        pc.take(codes, positions["block" if name == "block_code" else "grid"])
        for name, codes in zip(CODE_COLUMNS, job.codes, strict=True)
    ]
    for name in FLAG_COLUMNS:
        flags = result[name]
        if not all_valid:
            flags = np.zeros(n, dtype=bool)
            flags[valid] = result[name]
        added.append(_bool_array(flags))
    report.rows += n
    report.chunks += 1
    report.max_chunk_rows = max(report.max_chunk_rows, n)
    return pa.RecordBatch.from_arrays([*batch.columns, *added], schema=job.out_schema)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _output_schema(source: _Source) -> pa.Schema:
    fields = [*source.schema, *(pa.field(n, pa.string()) for n in CODE_COLUMNS)]
    fields += [pa.field(n, pa.bool_()) for n in FLAG_COLUMNS]
    return pa.schema(fields, metadata=source.schema.metadata)


class _Sink:
    """An incremental CSV or Parquet writer with one schema.

    Parquet batches are gathered into row groups of up to ``group_rows`` rows (CSV blocks give
    batches of a few ten thousand rows, small for row groups); CSV batches are written at once.
    """

    def __init__(self, path: Path, fmt: _Format, schema: pa.Schema, *, group_rows: int = 0) -> None:
        self._stream: Any = None
        self._writer: Any = None
        self._parquet: pq.ParquetWriter | None = None
        self._group_rows = max(group_rows, 1)
        self._held: list[pa.RecordBatch] = []
        self._held_rows = 0
        try:
            if fmt.kind == "parquet":
                # Dictionaries pay off for text (codes repeat endlessly); for numbers they cost time.
                text = [f.name for f in schema if _is_text(f.type)]
                self._parquet = pq.ParquetWriter(
                    str(path), schema, compression=_PARQUET_COMPRESSION, use_dictionary=text
                )
            else:
                raw = pa.OSFile(str(path), "wb")
                self._stream = pa.CompressedOutputStream(raw, "gzip") if fmt.gzip else raw
                self._writer = pacsv.CSVWriter(self._stream, schema)
        except pa.ArrowException as exc:
            self.close()
            hint = "; write Parquet instead" if fmt.kind == "csv" else ""
            raise BatchError(f"output {path}: cannot write these columns: {exc}{hint}") from None

    def write(self, batch: pa.RecordBatch) -> None:
        """Append one batch."""
        if self._writer is not None:
            self._writer.write_batch(batch)
        elif self._parquet is not None:
            self._held.append(batch)
            self._held_rows += batch.num_rows
            if self._held_rows >= self._group_rows:
                self._flush()

    def _flush(self) -> None:
        if self._parquet is not None and self._held:
            table = pa.Table.from_batches(self._held)
            self._parquet.write_table(table, row_group_size=self._group_rows)
        self._held, self._held_rows = [], 0

    def close(self) -> None:
        """Flush and close (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._parquet is not None:
            self._flush()
            self._parquet.close()
            self._parquet = None
        if self._stream is not None:
            self._stream.close()
            self._stream = None


# ---------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------


def _progress_bar(source: _Source, progress: bool | None) -> tqdm[Any]:
    by_bytes = source.fmt.kind == "csv"
    return tqdm(
        total=source.size_bytes if by_bytes else source.num_rows,
        unit="B" if by_bytes else " rows",
        unit_scale=True,
        unit_divisor=1024 if by_bytes else 1000,
        desc=f"geocoding {source.path.name}",
        file=sys.stderr,
        disable=None if progress is None else not progress,
        mininterval=0.5,
        dynamic_ncols=True,
    )


_WRITE_QUEUE: Final = 2


def _run_single(
    job: _Job, target: Path, out_fmt: _Format, chunk_rows: int, bar: tqdm[Any], report: BatchReport
) -> None:
    """Read, geocode and write chunk after chunk, timing each stage into report.

    A writer thread encodes the previous chunk while this thread geocodes the next one (pyarrow's
    writers release the GIL); its queue holds at most two chunks, so memory stays bounded.
    """
    position = [0]
    sink = _Sink(target, out_fmt, job.out_schema, group_rows=chunk_rows)
    pending: queue.Queue[pa.RecordBatch | None] = queue.Queue(maxsize=_WRITE_QUEUE)
    failure: list[BaseException] = []
    written = [0.0]

    def write_all() -> None:
        while (batch := pending.get()) is not None:
            if failure:
                continue  # keep draining so the producer never blocks
            t0 = time.perf_counter()
            try:
                sink.write(batch)
            except BaseException as exc:  # re-raised in the producer thread
                failure.append(exc)
            written[0] += time.perf_counter() - t0

    writer = threading.Thread(target=write_all, name="geocode-batch-writer", daemon=True)
    writer.start()
    cpu0 = time.process_time()
    try:
        t_read = time.perf_counter()
        for batch in _read_whole(job.source, chunk_rows, position):
            report.read_seconds += time.perf_counter() - t_read
            out = _geocode_batch(job, batch, report.rows, report)
            if failure:
                break
            pending.put(out)
            report.peak_arrow_bytes = max(report.peak_arrow_bytes, pa.total_allocated_bytes())
            bar.update(position[0] - bar.n)
            bar.set_postfix_str(f"{report.rows:,} rows", refresh=False)
            t_read = time.perf_counter()
    finally:
        pending.put(None)
        writer.join()
        t0 = time.perf_counter()
        sink.close()  # a Parquet file's last row group is encoded here
        report.write_seconds += written[0] + time.perf_counter() - t0
        report.cpu_seconds += time.process_time() - cpu0
    if failure:
        exc = failure[0]
        if isinstance(exc, pa.ArrowException):
            raise _write_failed(exc) from exc
        raise exc


def _write_failed(exc: pa.ArrowException) -> BatchError:
    return BatchError(f"cannot write the output: {' '.join(str(exc).split())}")


@dataclass(frozen=True, slots=True)
class _Piece:
    """One dask task's share of the input, in output order.

    A CSV piece is the bytes [start, end) of the file (whole lines); a Parquet piece is the rows
    [start, end) of one row group.
    """

    number: int
    start: int
    end: int
    row_group: int = -1

    @property
    def progress(self) -> int:
        """Its share of the progress bar: bytes for a CSV, rows for a Parquet file."""
        return self.end - self.start


def _csv_pieces(source: _Source, count: int) -> list[_Piece]:
    """Byte ranges of the data lines, cut just after a line end near each of count even splits."""
    begin, size = len(source.header), source.size_bytes
    bounds = [begin]
    with open(source.path, "rb") as raw:
        for k in range(1, count):
            target = begin + (size - begin) * k // count
            if target <= bounds[-1]:
                continue
            raw.seek(target - 1)
            skipped = 0
            while True:
                block = raw.read(65536)
                if not block:
                    cut = size
                    break
                newline = block.find(b"\n")
                if newline >= 0:
                    cut = target - 1 + skipped + newline + 1
                    break
                skipped += len(block)
            if cut >= size:
                break
            if cut > bounds[-1]:
                bounds.append(cut)
    bounds.append(size)
    return [_Piece(number=i, start=a, end=b) for i, (a, b) in enumerate(itertools.pairwise(bounds)) if b > a]


def _parquet_pieces(source: _Source, rows_per_piece: int) -> list[_Piece]:
    """Row ranges of at most rows_per_piece rows, none straddling two row groups."""
    metadata = pq.ParquetFile(source.path).metadata
    pieces: list[_Piece] = []
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        count = math.ceil(rows / rows_per_piece)
        for k in range(count):
            start, end = rows * k // count, rows * (k + 1) // count
            pieces.append(_Piece(number=len(pieces), start=start, end=end, row_group=group))
    return pieces


class _ByteRange(io.RawIOBase):
    """A file-like stream of a header followed by bytes [start, end) of a file (a CSV piece)."""

    def __init__(self, path: Path, header: bytes, start: int, end: int) -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._file.seek(start)
        self._head = memoryview(header)
        self._left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if len(self._head):
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if self._left <= 0:
            return 0
        n = self._file.readinto(view[: min(len(view), self._left)]) or 0
        self._left -= n
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


def _read_row_group(path: Path, group: int, _gate: object) -> pa.Table:
    """A dask task: decode one Parquet row group (its pieces slice it)."""
    return pq.ParquetFile(path).read_row_group(group, use_threads=False)


def _geocode_piece(
    job: _Job, chunk_rows: int, piece: _Piece, table: pa.Table | None, _gate: object
) -> tuple[list[pa.RecordBatch], BatchReport]:
    """A dask task: read and geocode one piece; return its output batches and its report.

    table is the piece's row group (Parquet input); a CSV piece is read from its byte range here.
    """
    started = time.perf_counter()
    report = BatchReport()
    source = job.source
    output: list[pa.RecordBatch] = []
    stream: _ByteRange | None = None
    try:
        if table is not None:
            part = table.slice(piece.start, piece.end - piece.start)
            batches = iter(part.to_batches(max_chunksize=chunk_rows))
        else:
            stream = _ByteRange(source.path, source.header, piece.start, piece.end)
            batches = _sliced(iter(_csv_reader(source, stream, use_threads=False)), chunk_rows)
        t_read = time.perf_counter()
        for batch in _guard(source, batches):
            report.read_seconds += time.perf_counter() - t_read
            output.append(_geocode_batch(job, batch, report.rows, report))
            report.peak_arrow_bytes = max(report.peak_arrow_bytes, pa.total_allocated_bytes())
            t_read = time.perf_counter()
    finally:
        if stream is not None:
            stream.close()
    report.seconds = time.perf_counter() - started
    return output, report


def _write_piece(
    sink: _Sink, produced: tuple[list[pa.RecordBatch], BatchReport], _previous: object
) -> BatchReport:
    """A dask task: append one piece's output to the sink (the write tasks form a chain, in order)."""
    output, report = produced
    t0 = time.perf_counter()
    try:
        for batch in output:
            sink.write(batch)
    except pa.ArrowException as exc:
        raise _write_failed(exc) from exc
    report.write_seconds += time.perf_counter() - t0
    return report


def _run_dask(
    job: _Job,
    target: Path,
    out_fmt: _Format,
    chunk_rows: int,
    workers: int,
    partition_bytes: int,
    bar: tqdm[Any],
    report: BatchReport,
) -> None:
    """Geocode pieces on dask's threaded scheduler and write them in order (see the module docstring).

    The graph, for pieces 0..n-1 and window w: ``read(i)`` (Parquet: the piece's row group, once per
    group) -> ``geocode(i)`` -> ``write(i)``, where ``write(i)`` also waits for ``write(i-1)`` and
    ``geocode(i)`` (and a row group's read) for ``write(i-w)``. So the output is in input order and
    at most w pieces are held in memory; a thread only idles when the next piece waits for the
    writes to catch up.
    """
    import dask
    from dask.callbacks import Callback

    source = job.source
    if source.fmt.kind == "csv" and source.fmt.gzip:
        raise BatchError(f"input {source.path}: a gzip file cannot be split; use --engine single")
    if source.fmt.kind == "csv":
        pieces = _csv_pieces(source, max(2 * workers, math.ceil(source.size_bytes / partition_bytes)))
    else:
        total = source.num_rows or 0
        pieces = _parquet_pieces(source, max(1, min(chunk_rows, math.ceil(total / (2 * workers)))))
    report.partitions = len(pieces)
    window = _WINDOW_PER_WORKER * workers
    cpu0 = time.process_time()
    sink = _Sink(target, out_fmt, job.out_schema, group_rows=chunk_rows)
    try:
        # The job (index, schema) and the sink are bound in partials: they are not dask collections,
        # and the graph only passes pieces, row groups and results between tasks.
        geocode = dask.delayed(partial(_geocode_piece, job, chunk_rows), pure=False)
        write = dask.delayed(partial(_write_piece, sink), pure=False)
        read = dask.delayed(partial(_read_row_group, source.path), pure=False)
        writes: list[Any] = []
        groups: dict[int, Any] = {}
        for piece in pieces:
            gate = writes[piece.number - window] if piece.number >= window else None
            table = None
            if piece.row_group >= 0:
                if piece.row_group not in groups:
                    groups[piece.row_group] = read(
                        piece.row_group, gate, dask_key_name=f"read-{piece.row_group}"
                    )
                table = groups[piece.row_group]
            produced = geocode(piece, table, gate, dask_key_name=f"geocode-{piece.number}")
            previous = writes[-1] if writes else None
            writes.append(write(produced, previous, dask_key_name=f"write-{piece.number}"))
        done = [0]

        class _Progress(Callback):
            """Advance the bar as pieces are written (the callback runs in the scheduler thread)."""

            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                if isinstance(key, str) and key.startswith("write-"):
                    bar.update(pieces[int(key[6:])].progress)
                    done[0] += result.rows
                    bar.set_postfix_str(f"{done[0]:,} rows", refresh=False)

        t0 = time.perf_counter()
        # Our own pool, not dask's shared one: leaving the block waits for every running task, so no
        # task still writes when the sink is closed after a failure.
        with ThreadPoolExecutor(workers, thread_name_prefix="geocode-batch") as pool, _Progress():
            results = dask.compute(*writes, scheduler=pool, optimize_graph=False)
        report.compute_seconds = time.perf_counter() - t0
    finally:
        t0 = time.perf_counter()
        sink.close()  # a Parquet file's last row group is encoded here
        closing = time.perf_counter() - t0
    report.cpu_seconds = time.process_time() - cpu0
    if bar.total:
        bar.update(bar.total - bar.n)  # the header line is in no piece
    for part in results:
        report.merge(part, row_offset=report.rows)
    report.write_seconds += closing


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def geocode_file(
    index: TerritoryIndex,
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    crs: str = "wgs84",
    lon_column: str = "lon",
    lat_column: str = "lat",
    encoding: str = "utf-8",
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    engine: str = "single",
    workers: int | None = None,
    partition_bytes: int = DEFAULT_PARTITION_BYTES,
    progress: bool | None = None,
) -> BatchReport:
    """Geocode every row of a CSV/Parquet file into a new CSV/Parquet file; raise BatchError on bad input."""
    started = time.perf_counter()
    src_path, dst_path = Path(src), Path(dst)
    try:
        datum = canonical_crs(crs)
    except ValueError as exc:
        raise BatchError(str(exc)) from None
    if engine not in ENGINES:
        raise BatchError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if chunk_rows < 1:
        raise BatchError(f"chunk_rows must be at least 1, got {chunk_rows}")
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if n_workers < 1:
        raise BatchError(f"workers must be at least 1, got {n_workers}")
    if partition_bytes < 1:
        raise BatchError(f"partition_bytes must be at least 1, got {partition_bytes}")
    out_fmt = _file_format(dst_path, "output")
    source = _open_source(src_path, lon_column=lon_column, lat_column=lat_column, encoding=encoding)
    if dst_path.exists() and dst_path.resolve() == src_path.resolve():
        raise BatchError(f"output {dst_path} is the input file; choose another name")
    if not dst_path.parent.is_dir():
        raise BatchError(f"output directory {dst_path.parent} does not exist")
    report = BatchReport(engine=engine, workers=n_workers if engine == "dask" else 1)
    target = dst_path.with_name(f".{dst_path.name}.{os.getpid()}.tmp")
    bar = _progress_bar(source, progress)
    try:
        job = _Job.create(index, source, datum)
        if engine == "single":
            _run_single(job, target, out_fmt, chunk_rows, bar, report)
        else:
            _run_dask(job, target, out_fmt, chunk_rows, n_workers, partition_bytes, bar, report)
        os.replace(target, dst_path)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    report.seconds = time.perf_counter() - started
    return report
