"""Batch geocoding of CSV and Parquet files in chunks of bounded size (pure: no Django import).

`geocode_file` reads the input in record batches of at most ``chunk_rows`` rows, geocodes each batch's
lon/lat with `TerritoryIndex.geocode_many` and appends it to the output, so memory stays flat however
large the file is. Every input column is kept as it was read (a CSV's columns as text, byte for byte; a
Parquet file's with their types) and seven columns are added: ``district_code``, ``street_code``,
``community_code``, ``grid_code``, ``block_code`` (strings; empty/null when unresolved) and
``near_boundary``, ``snapped`` (booleans; false when unresolved).

Rows whose lon/lat is missing, not a number or out of range are kept with empty codes and counted in
the report with the first few row numbers (1-based, the header not counted); so are points farther than
the snap tolerance from every grid ("outside").

Engines: ``single`` runs in this process: pyarrow parses ahead, numpy geocodes in this thread and a
writer thread encodes the previous chunk. ``dask`` splits the input into partitions (byte ranges of a
CSV cut at line ends, groups of Parquet row groups) and runs them as dask tasks on the processes
scheduler, each worker process loading the index once from a pickle written beside the output; each task
writes a part file (CSV text, or Arrow IPC for a Parquet output) and the parts are joined in order (CSV
by copying bytes, Parquet by encoding once). The output has the single engine's rows and values (a CSV,
byte for byte). The task function takes only paths and small records and returns a report, so the same
tasks can be submitted to a dask.distributed cluster whose workers see the output's directory. A CSV
partition boundary is a line end, so the dask engine needs CSV files without line breaks inside quoted
values (as dask's own read_csv does).

dask-geopandas is not used: the index takes lon/lat arrays, and making a shapely Point per row only to
take its x and y back would cost about as much as geocoding itself.

The output is written to a hidden temporary file beside it and renamed at the end, so a failed run never
leaves a truncated file under the requested name.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import math
import os
import pickle
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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
]

CODE_COLUMNS: Final = ("district_code", "street_code", "community_code", "grid_code", "block_code")
FLAG_COLUMNS: Final = ("near_boundary", "snapped")
ADDED_COLUMNS: Final = CODE_COLUMNS + FLAG_COLUMNS
ENGINES: Final = ("single", "dask")
DEFAULT_CHUNK_ROWS: Final = 262_144
MAX_BAD_EXAMPLES: Final = 10
# Bytes of CSV text per dask partition: large enough that a task's fixed cost (process hop, part file)
# is small against its work, small enough that a partition held in memory is modest.
DEFAULT_PARTITION_BYTES: Final = 32 * 2**20
# The CSV reader's memory is a few blocks, whatever the file size; larger blocks bought no speed.
_CSV_BLOCK: Final = 1 * 2**20
_COPY_BLOCK: Final = 8 * 2**20
_PARQUET_COMPRESSION: Final = "zstd"

# "arrow" (Arrow IPC, uncompressed) is only used for the dask engine's part files.
_Kind = Literal["csv", "parquet", "arrow"]


class BatchError(ValueError):
    """A batch job cannot run or failed on its input; the message is one line naming the cause."""


@dataclass(frozen=True, slots=True)
class _Format:
    kind: _Kind
    gzip: bool = False

    @property
    def part_format(self) -> _Format:
        """What a dask partition writes for this output: CSV text to concatenate, else Arrow IPC."""
        return _Format("csv") if self.kind == "csv" else _Format("arrow")


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
    partitions: int = 1
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
    join_seconds: float = 0.0
    peak_arrow_bytes: int = 0

    def merge(self, other: BatchReport, *, row_offset: int = 0) -> None:
        """Add a partition's counts into this report; its row numbers start after row_offset rows."""
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
            f"({self.engine} engine, {self.workers} worker(s), {self.partitions} partition(s))",
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
            "(in a writer thread, overlapping)"
        )
        if self.engine == "dask":
            lines.append(
                f"dask: {self.compute_seconds:.2f} s running {self.partitions} task(s) on {self.workers} "
                f"worker(s) ({self.task_seconds:.2f} s of task time, so about "
                f"{max(self.compute_seconds - self.task_seconds / self.workers, 0.0):.2f} s starting "
                f"processes and scheduling); joining the parts {self.join_seconds:.2f} s"
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


def _csv_reader(source: _Source, stream: Any) -> pacsv.CSVStreamingReader:
    read_options = pacsv.ReadOptions(block_size=_CSV_BLOCK, encoding=source.encoding, use_threads=True)
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
            trimmed = pc.utf8_trim_whitespace(column)
            trimmed = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, trimmed.type), trimmed)
            try:
                column = pc.cast(trimmed, pa.float64())
            except pa.ArrowInvalid:
                return np.array([_parse_float(v) for v in trimmed.to_pylist()], dtype=np.float64)
    else:
        column = pc.cast(column, pa.float64())
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)


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


def _geocode_batch(
    index: TerritoryIndex,
    source: _Source,
    batch: pa.RecordBatch,
    out_schema: pa.Schema,
    crs: str,
    first_row: int,
    report: BatchReport,
) -> pa.RecordBatch:
    """Geocode one batch into the output batch (input columns + added ones) and count into report."""
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
    if crs not in ("wgs84", "cgcs2000"):
        lon, lat = to_wgs84_many(lon, lat, crs)
    t0 = time.perf_counter()
    result = index.geocode_many(lon, lat, with_block=True)
    report.geocode_seconds += time.perf_counter() - t0
    unresolved = int(np.count_nonzero(np.isnan(result["boundary_distance_m"])))
    report.outside += unresolved
    report.resolved += n_valid - unresolved
    report.snapped += int(np.count_nonzero(result["snapped"]))
    report.near_boundary += int(np.count_nonzero(result["near_boundary"]))
    added: list[pa.Array] = []
    for name in CODE_COLUMNS:
        codes = result[name]
        if not all_valid:
            codes = np.full(n, None, dtype=object)
            codes[valid] = result[name]
        # from_pandas takes None as null without the per-item type checks of the default path.
        added.append(pa.array(codes, type=pa.string(), from_pandas=True))
    for name in FLAG_COLUMNS:
        flags = result[name]
        if not all_valid:
            flags = np.zeros(n, dtype=bool)
            flags[valid] = result[name]
        added.append(pa.array(flags, type=pa.bool_()))
    report.rows += n
    report.chunks += 1
    report.max_chunk_rows = max(report.max_chunk_rows, n)
    return pa.RecordBatch.from_arrays([*batch.columns, *added], schema=out_schema)


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _output_schema(source: _Source) -> pa.Schema:
    fields = [*source.schema, *(pa.field(n, pa.string()) for n in CODE_COLUMNS)]
    fields += [pa.field(n, pa.bool_()) for n in FLAG_COLUMNS]
    return pa.schema(fields, metadata=source.schema.metadata)


class _Sink:
    """An incremental CSV, Parquet or Arrow IPC writer with one schema.

    Parquet batches are gathered into row groups of up to ``group_rows`` rows (CSV blocks give
    batches of a few ten thousand rows, small for row groups); other formats write at once.
    """

    def __init__(
        self, path: Path, fmt: _Format, schema: pa.Schema, *, header: bool = True, group_rows: int = 0
    ) -> None:
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
                if fmt.kind == "csv":
                    options = pacsv.WriteOptions(include_header=header)
                    self._writer = pacsv.CSVWriter(self._stream, schema, write_options=options)
                else:
                    self._writer = pa.ipc.new_stream(self._stream, schema)
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


def _run_chunks(
    index: TerritoryIndex,
    source: _Source,
    batches: Iterator[pa.RecordBatch],
    sink: _Sink,
    out_schema: pa.Schema,
    crs: str,
    report: BatchReport,
    on_chunk: Callable[[], None] | None = None,
) -> None:
    """Read, geocode and write chunk after chunk, timing each stage into report.

    A writer thread encodes the previous chunk while this thread geocodes the next one (pyarrow's
    writers release the GIL); its queue holds at most two chunks, so memory stays bounded.
    """
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
        for batch in batches:
            report.read_seconds += time.perf_counter() - t_read
            out = _geocode_batch(index, source, batch, out_schema, crs, report.rows, report)
            if failure:
                break
            pending.put(out)
            report.peak_arrow_bytes = max(report.peak_arrow_bytes, pa.total_allocated_bytes())
            if on_chunk is not None:
                on_chunk()
            t_read = time.perf_counter()
    finally:
        pending.put(None)
        writer.join()
        report.write_seconds += written[0]
        report.cpu_seconds += time.process_time() - cpu0
    if failure:
        exc = failure[0]
        if isinstance(exc, pa.ArrowException):
            raise BatchError(f"cannot write the output: {' '.join(str(exc).split())}") from exc
        raise exc


def _run_single(
    index: TerritoryIndex,
    source: _Source,
    target: Path,
    out_fmt: _Format,
    out_schema: pa.Schema,
    crs: str,
    chunk_rows: int,
    bar: tqdm[Any],
    report: BatchReport,
) -> None:
    position = [0]
    sink = _Sink(target, out_fmt, out_schema, group_rows=chunk_rows)
    try:

        def advance() -> None:
            bar.update(position[0] - bar.n)
            bar.set_postfix_str(f"{report.rows:,} rows", refresh=False)

        _run_chunks(
            index, source, _read_whole(source, chunk_rows, position), sink, out_schema, crs, report, advance
        )
    finally:
        sink.close()


@dataclass(frozen=True, slots=True)
class _Partition:
    """One dask task's share of the input: a byte range of a CSV or some Parquet row groups."""

    number: int
    start: int = 0
    end: int = 0
    row_groups: tuple[int, ...] = ()


def _csv_partitions(source: _Source, count: int) -> list[_Partition]:
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
    return [
        _Partition(number=i, start=a, end=b) for i, (a, b) in enumerate(itertools.pairwise(bounds)) if b > a
    ]


def _parquet_partitions(source: _Source, count: int) -> list[_Partition]:
    """Consecutive row groups in count groups of about equal rows."""
    metadata = pq.ParquetFile(source.path).metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    total = sum(sizes)
    parts: list[_Partition] = []
    groups: list[int] = []
    rows = 0
    for i, size in enumerate(sizes):
        groups.append(i)
        rows += size
        if rows >= total * (len(parts) + 1) / count or i == len(sizes) - 1:
            parts.append(_Partition(number=len(parts), row_groups=tuple(groups)))
            groups = []
    return parts


_worker_index: dict[str, TerritoryIndex] = {}
_worker_lock = threading.Lock()


def _load_worker_index(path: str) -> TerritoryIndex:
    """The index pickled at path, loaded once per worker process."""
    with _worker_lock:
        index = _worker_index.get(path)
        if index is None:
            with open(path, "rb") as handle:
                index = pickle.load(handle)  # our own file, written by this run
            _worker_index.clear()
            _worker_index[path] = index
        return index


class _ByteRange(io.RawIOBase):
    """A file-like stream of a header followed by bytes [start, end) of a file (a CSV partition)."""

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


def _run_partition(
    index_path: str,
    source: _Source,
    partition: _Partition,
    part_path: str,
    part_fmt: _Format,
    crs: str,
    chunk_rows: int,
) -> tuple[int, BatchReport]:
    """A dask task: geocode one partition into its own part file (CSV parts without header)."""
    started = time.perf_counter()
    index = _load_worker_index(index_path)
    report = BatchReport()
    out_schema = _output_schema(source)
    sink = _Sink(Path(part_path), part_fmt, out_schema, header=False, group_rows=chunk_rows)
    try:
        if source.fmt.kind == "parquet":
            batches: Iterator[pa.RecordBatch] = pq.ParquetFile(source.path).iter_batches(
                batch_size=chunk_rows, row_groups=list(partition.row_groups)
            )
            _run_chunks(index, source, _guard(source, batches), sink, out_schema, crs, report)
        else:
            with _ByteRange(source.path, source.header, partition.start, partition.end) as stream:
                batches = _sliced(iter(_csv_reader(source, stream)), chunk_rows)
                _run_chunks(index, source, _guard(source, batches), sink, out_schema, crs, report)
    finally:
        sink.close()
    report.seconds = time.perf_counter() - started
    return partition.number, report


def _run_dask(
    index: TerritoryIndex,
    source: _Source,
    target: Path,
    out_fmt: _Format,
    out_schema: pa.Schema,
    crs: str,
    chunk_rows: int,
    workers: int,
    partition_bytes: int,
    bar: tqdm[Any],
    report: BatchReport,
) -> None:
    import cloudpickle
    import dask
    from dask.callbacks import Callback

    if source.fmt.kind == "csv" and source.fmt.gzip:
        raise BatchError(f"input {source.path}: a gzip file cannot be split; use --engine single")
    wanted = max(2 * workers, math.ceil(source.size_bytes / partition_bytes))
    if source.fmt.kind == "csv":
        partitions = _csv_partitions(source, wanted)
    else:
        partitions = _parquet_partitions(source, wanted)
    report.partitions = len(partitions)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as scratch:
        index_path = os.path.join(scratch, "index.pkl")
        with open(index_path, "wb") as handle:
            # cloudpickle: the index holds functions compiled at build time, which plain pickle refuses.
            cloudpickle.dump(index, handle, protocol=pickle.HIGHEST_PROTOCOL)
        part_fmt = out_fmt.part_format
        part_paths = [os.path.join(scratch, f"part-{p.number:05d}.{part_fmt.kind}") for p in partitions]
        tasks = [
            dask.delayed(_run_partition, pure=False)(index_path, source, p, path, part_fmt, crs, chunk_rows)
            for p, path in zip(partitions, part_paths, strict=True)
        ]
        share = {p.number: p.end - p.start for p in partitions}

        class _Progress(Callback):
            """Advance the bar as partitions finish (the callback runs in the scheduler thread)."""

            def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
                if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], BatchReport):
                    number, part = result
                    bar.update(part.rows if source.fmt.kind == "parquet" else share[number])
                    finished[0] += part.rows
                    bar.set_postfix_str(f"{finished[0]:,} rows", refresh=False)

        finished = [0]
        with _Progress():
            t0 = time.perf_counter()
            results = dask.compute(*tasks, scheduler="processes", num_workers=workers)
            report.compute_seconds = time.perf_counter() - t0
        if bar.total:
            bar.update(bar.total - bar.n)  # the header line is in no partition
        for _number, part in sorted(results, key=lambda item: item[0]):
            report.merge(part, row_offset=report.rows)
        t0 = time.perf_counter()
        _concatenate(part_paths, target, out_fmt, out_schema, chunk_rows)
        report.join_seconds = time.perf_counter() - t0


def _concatenate(parts: list[str], target: Path, fmt: _Format, schema: pa.Schema, chunk_rows: int) -> None:
    """Join the part files, in order, into target."""
    if fmt.kind == "csv":
        header = pa.BufferOutputStream()
        pacsv.CSVWriter(header, schema).close()
        with pa.OSFile(str(target), "wb") as raw:
            out = pa.CompressedOutputStream(raw, "gzip") if fmt.gzip else raw
            out.write(header.getvalue())
            for part in parts:
                with pa.OSFile(part, "rb") as handle:
                    while block := handle.read(_COPY_BLOCK):
                        out.write(block)
            if out is not raw:
                out.close()
        return
    writer = _Sink(target, fmt, schema, group_rows=chunk_rows)
    try:
        for part in parts:
            # Parts are uncompressed Arrow IPC: mapped, not decoded, so only the Parquet encoding is
            # left to this serial step.
            with pa.memory_map(part) as source, pa.ipc.open_stream(source) as reader:
                for batch in reader:
                    writer.write(batch)
    finally:
        writer.close()


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
    out_fmt = _file_format(dst_path, "output")
    source = _open_source(src_path, lon_column=lon_column, lat_column=lat_column, encoding=encoding)
    if dst_path.exists() and dst_path.resolve() == src_path.resolve():
        raise BatchError(f"output {dst_path} is the input file; choose another name")
    if not dst_path.parent.is_dir():
        raise BatchError(f"output directory {dst_path.parent} does not exist")
    out_schema = _output_schema(source)
    report = BatchReport(engine=engine, workers=n_workers if engine == "dask" else 1)
    target = dst_path.with_name(f".{dst_path.name}.{os.getpid()}.tmp")
    bar = _progress_bar(source, progress)
    try:
        if engine == "single":
            _run_single(index, source, target, out_fmt, out_schema, datum, chunk_rows, bar, report)
        else:
            _run_dask(
                index,
                source,
                target,
                out_fmt,
                out_schema,
                datum,
                chunk_rows,
                n_workers,
                partition_bytes,
                bar,
                report,
            )
        os.replace(target, dst_path)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    report.seconds = time.perf_counter() - started
    return report
