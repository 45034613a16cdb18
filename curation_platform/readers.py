"""Readers: turn a drop folder into canonical records (RECORD_SCHEMA) and quarantine rows with reasons.

Every input record ends up in exactly one of the two frames, so ``read_count == len(records) +
len(quarantine)`` for every drop. Bad input never raises: a malformed line, a corrupt file or an unknown license
becomes a quarantine row naming the file, the line and the reason. Only a bad manifest (ManifestError) or a path
that escapes the drop (UnsafePathError) stops the read, because then nothing in the drop can be trusted.

Streaming: ``read_drop_batches`` yields the drop in batches of at most ``batch_rows`` candidates, and no data
file is ever in memory whole: JSON Lines files (plain or gzip) are read line by line, Parquet files row group by
row group (pyarrow), CSV files in Polars batches (for both, a first pass over the file finds a corrupt file before
any of its rows is yielded, so a bad file is still one quarantine row), WARC files record by record. One-document-per-file formats read one file (at most
``max_record_bytes``) at a time. Only the doc-id hashes seen so far are kept across batches (to number repeated
records), about 50 bytes per document. ``read_drop`` concatenates the batches. With ``workers`` > 1 the batches
are decided (JSON fields, rules, doc-id hashes) in the local executor's worker pool, results in input order; only
the numbering of repeated records runs here, so the output is the same for any number of workers.

How it works: each data file becomes candidate rows ``(file, line, raw JSON object | text, format)``; problems
found while reading bytes (invalid UTF-8, oversized lines, corrupt gzip) are marked there. One DuckDB query then
pulls the text, id, license and chat turns out of every JSON record at once, and Polars expressions decide each
row's fate. Parquet and CSV rows are encoded as JSON objects so all record formats share that one path.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from fastwarc.warc import ArchiveIterator, WarcRecordType
from pydantic import BaseModel, ConfigDict
from resiliparse.parse.encoding import bytes_to_str, detect_encoding

from curation_platform.errors import UnsafePathError
from curation_platform.formatting import chat_messages, chat_problems, render_plain
from curation_platform.hashing import xxh128_hex
from curation_platform.licenses import closest_license, normalize_license
from curation_platform.manifest import MANIFEST_NAME, READY_MARKER, Manifest, load_manifest
from curation_platform.records import INGEST_SCHEMA, MESSAGES_DTYPE
from curation_platform.storage import as_path, is_uri, list_objects

EXCERPT_CHARS = 200
_TABLE_CHUNK_ROWS = 8_192  # rows per Polars batch of a Parquet or CSV file: memory, not results

QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "doc_id": pl.String,
    "file": pl.String,
    "line": pl.Int64,
    "reason": pl.String,
    "excerpt": pl.String,  # first 200 characters of the raw input
    "source": pl.String,
    "drop": pl.String,
    "source_id": pl.String,
    "license": pl.String,  # the license string as given (unnormalized), if any
}


class IngestConfig(BaseModel):
    """Limits for reading drops (platform defaults; no published reference sets these)."""

    model_config = ConfigDict(extra="forbid")

    max_record_bytes: int = 1_000_000  # a JSON line, table row (as JSON) or whole file above this is quarantined
    settle_seconds: float = 10  # a drop without _READY is read once nothing in it changed for this long
    min_text_chars: int = 1  # text shorter than this after stripping whitespace is quarantined as empty


@dataclass
class IngestResult:
    """What ``read_drop`` returns: canonical records, quarantined inputs, and how many inputs it saw."""

    records: pl.DataFrame
    quarantine: pl.DataFrame
    read_count: int
    metrics: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# Formats

_RECORD_EXTENSIONS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",  # .json is read as JSON Lines (the HF datasets default)
    ".jsonl.gz": "jsonl", ".ndjson.gz": "jsonl", ".json.gz": "jsonl",
    ".parquet": "parquet", ".csv": "csv", ".tsv": "csv",
}
_DOCUMENT_EXTENSIONS = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
                        ".html": "html", ".htm": "html", ".xhtml": "html"}
CODE_LANGUAGES = {
    ".py": "python", ".pyi": "python", ".ipynb": "jupyter", ".js": "javascript", ".mjs": "javascript",
    ".cjs": "javascript", ".jsx": "javascript", ".ts": "typescript", ".tsx": "typescript", ".go": "go",
    ".rs": "rust", ".java": "java", ".kt": "kotlin", ".kts": "kotlin", ".scala": "scala", ".c": "c", ".h": "c",
    ".cpp": "cpp", ".cc": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".cs": "csharp", ".rb": "ruby",
    ".php": "php", ".swift": "swift", ".m": "objective-c", ".sh": "shell", ".bash": "shell", ".zsh": "shell",
    ".ps1": "powershell", ".sql": "sql", ".r": "r", ".jl": "julia", ".lua": "lua", ".pl": "perl", ".pm": "perl",
    ".hs": "haskell", ".ex": "elixir", ".exs": "elixir", ".erl": "erlang", ".clj": "clojure", ".dart": "dart",
    ".css": "css", ".scss": "scss", ".vue": "vue", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
    ".xml": "xml", ".proto": "protobuf", ".zig": "zig", ".nim": "nim", ".f90": "fortran", ".asm": "assembly",
}
_WARC_EXTENSIONS = {".warc": "warc", ".warc.gz": "warc", ".arc.gz": "warc"}
_CODE_FILENAMES = {"Dockerfile": "dockerfile", "Makefile": "makefile", "CMakeLists.txt": "cmake"}
_RECORD_FORMATS = {"jsonl", "parquet", "csv"}


def _extension(rel: str) -> str:
    name = rel.rsplit("/", 1)[-1].lower()
    if name.endswith(".gz"):
        return "." + ".".join(name.split(".")[-2:]) if name.count(".") >= 2 else ".gz"
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def _file_format(rel: str, forced: str | None) -> tuple[str | None, str | None]:
    """(container format, code language) for a file; format None means unknown."""
    ext = _extension(rel)
    name = rel.rsplit("/", 1)[-1]
    language = _CODE_FILENAMES.get(name) or CODE_LANGUAGES.get(ext)
    if forced == "code":
        return "code", language
    if forced in _RECORD_FORMATS or forced in _DOCUMENT_EXTENSIONS.values() or forced == "warc":
        return forced, None
    # No forced container (or "chat", whose container still comes from the extension).
    if name in _CODE_FILENAMES:
        return "code", language
    fmt = _RECORD_EXTENSIONS.get(ext) or _DOCUMENT_EXTENSIONS.get(ext) or _WARC_EXTENSIONS.get(ext)
    if fmt:
        return fmt, None
    if language:
        return "code", language
    return None, None


# ---------------------------------------------------------------------------------------------------------------
# Files in a drop


def _data_files(drop_dir: Path) -> list[tuple[str, Path]]:
    """(relative posix path, absolute path) of every data file, sorted; raises UnsafePathError on escapes. Under
    an object-store prefix, every object (objects have no links, so nothing can escape)."""
    if is_uri(drop_dir):
        return [(rel, drop_dir / rel) for rel, _ in list_objects(drop_dir)
                if not any(part.startswith(".") for part in rel.split("/")) and rel not in (MANIFEST_NAME, READY_MARKER)]
    root = drop_dir.resolve()
    found: list[tuple[str, Path]] = []
    escapes: list[str] = []  # every escaping path, so one run reports them all
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in dirnames:
            escapes += _escape(root, here / name)
        for name in filenames:
            if name.startswith(".") or name in (MANIFEST_NAME, READY_MARKER):
                continue
            path = here / name
            escapes += _escape(root, path)
            found.append((path.relative_to(root).as_posix(), path))
    if escapes:
        raise UnsafePathError(
            f"drop '{drop_dir.name}': {'; '.join(sorted(escapes))}; copy the data into the drop instead of "
            "linking to it."
        )
    return sorted(found)


def _escape(root: Path, path: Path) -> list[str]:
    """``["<rel> points outside the drop (to <target>)"]`` when ``path`` escapes ``root``, else ``[]``."""
    rel = path.relative_to(root)
    if ".." in rel.parts or not path.resolve().is_relative_to(root):
        return [f"{rel.as_posix()} points outside the drop (to {path.resolve()})"]
    return []


# ---------------------------------------------------------------------------------------------------------------
# Candidate rows: one per input record, before any decision

_CANDIDATE_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String,
    "line": pl.Int64,
    "format": pl.String,
    "code_language": pl.String,
    "raw": pl.String,  # the record as a JSON object (record formats)
    "text": pl.String,  # the whole file (one-document-per-file formats)
    "excerpt": pl.String,  # set where raw and text are absent (bad bytes, oversized, corrupt files)
    "reason_code": pl.String,  # problems found while reading bytes
    "reason": pl.String,
    # WARC response records: provenance of the fetch.
    "url": pl.String,
    "fetch_date": pl.String,  # WARC-Date, ISO 8601
    "content_type": pl.String,  # HTTP Content-Type (MIME type only)
    "warc_record_id": pl.String,
}
_HTML_TYPES = ("text/html", "application/xhtml+xml")


def _lossy(data: bytes) -> str:
    return data[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")[:EXCERPT_CHARS]


def _problem_row(rel: str, line: int | None, fmt: str | None, code: str, reason: str, excerpt: str) -> dict:
    return {"file": rel, "line": line, "format": fmt, "code_language": None, "raw": None, "text": None,
            "excerpt": excerpt, "reason_code": code, "reason": reason}


class _Gunzip:
    """Streaming gzip decompression as far as the data allows (multi-member files): iterate for the decompressed
    pieces; ``error`` is then the corruption message or None. On damage, the failing chunk is replayed in small
    steps to keep what decompresses before it."""

    def __init__(self, path: Path):
        self.path = path
        self.error: str | None = None

    def __iter__(self) -> Iterator[bytes]:
        decoder = zlib.decompressobj(wbits=31)
        produced = False
        with self.path.open("rb") as handle:
            while chunk := handle.read(1 << 16):
                while chunk:
                    if decoder.eof:  # a new gzip member starts
                        decoder = zlib.decompressobj(wbits=31)
                    saved = decoder.copy()
                    try:
                        piece = decoder.decompress(chunk)
                    except zlib.error as error:
                        for start in range(0, len(chunk), 256):
                            try:
                                piece = saved.decompress(chunk[start : start + 256])
                            except zlib.error:
                                break
                            produced |= bool(piece)
                            yield piece
                        self.error = f"corrupt gzip ({error})"
                        return
                    produced |= bool(piece)
                    yield piece
                    chunk = decoder.unused_data if decoder.eof else b""
        if not decoder.eof and (produced or self.path.stat().st_size):
            self.error = "corrupt gzip (file is truncated: the compressed stream ends early)"


def _line_chunks(rel: str, path: Path, batch_rows: int) -> Iterator[tuple[int, list[bytes], str | None, bytes | None]]:
    """(first line number, lines without their newline, corruption message, partial last line) per run of at
    most ``batch_rows`` lines; corruption and partial come with the last run only."""
    gz = rel.lower().endswith(".gz")
    number, first = 1, True
    if gz:
        stream = _Gunzip(path)
        pending: list[bytes] = []
        rest = b""
        for piece in stream:
            lines = (rest + piece).split(b"\n")
            rest = lines.pop()
            pending.extend(lines)
            while len(pending) >= batch_rows:
                run, pending = pending[:batch_rows], pending[batch_rows:]
                if first:
                    run[0], first = run[0].removeprefix(b"\xef\xbb\xbf"), False
                yield number, run, None, None
                number += len(run)
        if stream.error is None:
            pending.append(rest)  # the last line (empty after a final newline)
        if first and pending:
            pending[0] = pending[0].removeprefix(b"\xef\xbb\xbf")
        yield number, pending, stream.error, (rest if stream.error else None)
        return
    with path.open("rb") as handle:
        last = b""
        while run := list(itertools.islice(handle, batch_rows)):
            last = run[-1]
            run = [line[:-1] if line.endswith(b"\n") else line for line in run]
            if first:
                run[0], first = run[0].removeprefix(b"\xef\xbb\xbf"), False
            yield number, run, None, None
            number += len(run)
        if first or last.endswith(b"\n"):  # like bytes.split: an empty last line after a final newline
            yield number, [b""], None, None


def _line_candidates(rel: str, path: Path, cfg: IngestConfig, batch_rows: int = 1 << 62) -> Iterator[pl.DataFrame]:
    """JSON Lines (plain or gzip), streamed: one candidate per non-blank line; bad bytes are marked, not parsed."""
    for first_line, chunks, corruption, partial in _line_chunks(rel, path, batch_rows):
        yield _line_frame(rel, first_line, chunks, corruption, partial, cfg)


def _line_frame(rel: str, first_line: int, chunks: list[bytes], corruption: str | None, partial: bytes | None,
                cfg: IngestConfig) -> pl.DataFrame:
    data = b"\n".join(chunks)
    try:
        lines: list[str | None] = data.decode("utf-8").split("\n")[: len(chunks)]
        bad_utf8: list[bool] = [False] * len(chunks)
    except UnicodeDecodeError:
        # Slow path only to locate the bad lines; the clean ones are still parsed in bulk below.
        lines, bad_utf8 = [], []
        for chunk in chunks:
            try:
                lines.append(chunk.decode("utf-8"))
                bad_utf8.append(False)
            except UnicodeDecodeError:
                lines.append(None)
                bad_utf8.append(True)
    excerpts = [_lossy(chunk) if bad else None for chunk, bad in zip(chunks, bad_utf8)]
    frame = (
        pl.DataFrame(
            {"raw": lines, "excerpt": excerpts, "bad_utf8": bad_utf8},
            schema={"raw": pl.String, "excerpt": pl.String, "bad_utf8": pl.Boolean},
        )
        .with_row_index("line", offset=first_line)
        .with_columns(pl.col("line").cast(pl.Int64), pl.col("raw").str.strip_suffix("\r"))
        # Lines of only JSON whitespace are not records (trailing newlines, spacing between records).
        .filter(pl.col("bad_utf8") | (pl.col("raw").str.strip_chars(" \t\r") != ""))
    )
    too_big = pl.col("raw").str.len_bytes() > cfg.max_record_bytes
    frame = frame.select(
        pl.lit(rel).alias("file"),
        "line",
        pl.lit("jsonl").alias("format"),
        pl.lit(None, dtype=pl.String).alias("code_language"),
        pl.when(too_big).then(None).otherwise(pl.col("raw")).alias("raw"),
        pl.lit(None, dtype=pl.String).alias("text"),
        pl.when(too_big).then(pl.col("raw").str.slice(0, EXCERPT_CHARS)).otherwise(pl.col("excerpt")).alias("excerpt"),
        pl.when(pl.col("bad_utf8")).then(pl.lit("invalid_utf8"))
        .when(too_big).then(pl.lit("too_large")).alias("reason_code"),
        pl.when(pl.col("bad_utf8")).then(pl.lit("invalid UTF-8 in line"))
        .when(too_big)
        .then(pl.format("record is {} bytes, over max_record_bytes {}", pl.col("raw").str.len_bytes(),
                        pl.lit(cfg.max_record_bytes)))
        .alias("reason"),
    )
    if corruption:
        read = first_line - 1 + len(chunks)
        tail = _problem_row(rel, read + 1, "jsonl", "corrupt_gzip",
                            f"{corruption} at line {read + 1}; the rest of the file could not be read "
                            f"({read} lines before it were read); re-export or re-compress the file",
                            _lossy(partial or b""))
        frame = pl.concat([frame, pl.DataFrame([tail], schema=_CANDIDATE_SCHEMA)], how="diagonal")
    return frame


def _table_scan(rel: str, source: Path, fmt: str) -> pl.LazyFrame:
    """The lazy rows of a local Parquet or CSV file, read with the same Polars readers as ``pl.read_parquet`` and
    ``pl.read_csv`` (same values, same error messages)."""
    if fmt == "parquet":
        return pl.scan_parquet(source)
    # All columns as strings: a CSV has no types, and an empty cell is an empty text, not a null.
    return pl.scan_csv(source, infer_schema=False, empty_string_is_null=False, raise_if_empty=False,
                       separator="\t" if rel.lower().endswith(".tsv") else ",")


@contextlib.contextmanager
def _local_copy(path: Path) -> Iterator[Path]:
    """``path`` itself, or for an object a temporary local copy written in 1 MiB pieces: Polars reads a Python
    file object whole into memory, a local file in bounded pieces."""
    if not is_uri(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="curate-input-") as folder:
        local = Path(folder) / path.name
        with path.open("rb") as source, local.open("wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
        yield local


def _table_candidates(rel: str, path: Path, fmt: str, batch_rows: int = 1 << 62) -> Iterator[pl.DataFrame]:
    """Parquet or CSV, streamed: one candidate per row, encoded as a JSON object, in frames of at most
    ``batch_rows`` rows (``line`` is the row number, counted across frames; a CSV record spanning several lines
    is one row, numbered like any other). A file that cannot be read is one candidate with the error, and then
    none of its rows is a candidate, as when files were read whole: a first streaming pass reads the file to the
    end and discards the rows, so that an error late in the file is known before any row is yielded (the file is
    decoded twice). Memory: a Parquet row group (pyarrow decodes one at a time), or Polars' bounded CSV read-ahead.
    An object on S3 is copied to a local temporary file first (see ``_local_copy``)."""
    chunk_rows = min(batch_rows, _TABLE_CHUNK_ROWS)  # rows per Polars batch; frames are then cut at batch_rows
    with _local_copy(path) as source:
        try:
            scan = _table_scan(rel, source, fmt)
            if not scan.collect_schema().len():  # a file with no columns has no records
                return
            for _ in scan.collect_batches(chunk_size=chunk_rows):
                pass
            # JSON has no bytes: binary columns travel as base64.
            as_json = pl.struct(pl.all()).struct.json_encode().alias("raw")
            if fmt == "parquet":
                # pyarrow decodes one row group at a time; Polars' streaming engine reads several ahead.
                batches = pq.ParquetFile(source, pre_buffer=False).iter_batches(batch_size=chunk_rows)
                raw = (pl.from_arrow(pa.Table.from_batches([batch]))
                       .with_columns(pl.col(pl.Binary).bin.encode("base64")).select(as_json) for batch in batches)
            else:
                raw = scan.with_columns(pl.col(pl.Binary).bin.encode("base64")).select(as_json).collect_batches(
                    chunk_size=chunk_rows)
        except (pl.exceptions.PolarsError, OSError, pl.exceptions.PanicException) as error:
            yield _table_problem(rel, source, fmt, error)
            return
        line = 1
        parts = _rebatched(raw, batch_rows)
        while True:
            try:
                part = next(parts, None)
            except (pl.exceptions.PolarsError, pa.ArrowException, OSError, pl.exceptions.PanicException) as error:
                # Only if the file changed since the first pass: keep what was read, name the row it stopped at.
                problem = _table_problem(rel, source, fmt, error)
                yield problem.with_columns(line=pl.lit(line, pl.Int64),
                                           reason=pl.format("{} (at row {})", "reason", pl.lit(line)))
                return
            if part is None:
                return
            yield part.with_row_index("line", offset=line).select(
                pl.lit(rel).alias("file"),
                pl.col("line").cast(pl.Int64),
                pl.lit(fmt).alias("format"),
                pl.lit(None, dtype=pl.String).alias("code_language"),
                "raw",
                pl.lit(None, dtype=pl.String).alias("text"),
                pl.lit(None, dtype=pl.String).alias("excerpt"),
                pl.lit(None, dtype=pl.String).alias("reason_code"),
                pl.lit(None, dtype=pl.String).alias("reason"),
            )
            line += part.height


def _rebatched(parts: Iterator[pl.DataFrame], batch_rows: int) -> Iterator[pl.DataFrame]:
    """The rows of ``parts`` again, in frames of exactly ``batch_rows`` rows (the last one: what remains)."""
    pending: list[pl.DataFrame] = []
    count = 0
    for part in parts:
        while part.height:
            take = part.slice(0, batch_rows - count)
            part = part.slice(take.height)
            pending.append(take)
            count += take.height
            if count == batch_rows:
                yield pl.concat(pending)
                pending, count = [], 0
    if count:
        yield pl.concat(pending)


def _table_problem(rel: str, path: Path, fmt: str, error: BaseException) -> pl.DataFrame:
    """The one candidate of a Parquet or CSV file that cannot be read."""
    message = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    label = "Parquet" if fmt == "parquet" else "CSV"
    with path.open("rb") as handle:
        head = handle.read(EXCERPT_CHARS * 4)
    return pl.DataFrame(
        [_problem_row(rel, None, fmt, f"corrupt_{fmt}",
                      f"corrupt {label} file ({message}); re-export the file", _lossy(head))],
        schema=_CANDIDATE_SCHEMA,
    )


def _document_candidate(rel: str, path: Path, fmt: str, language: str | None, cfg: IngestConfig) -> dict:
    """A text, Markdown, HTML or code file: the whole file is one candidate document."""
    size = path.stat().st_size
    if size > cfg.max_record_bytes:
        with path.open("rb") as handle:
            head = handle.read(EXCERPT_CHARS * 4)
        return _problem_row(rel, None, fmt, "too_large",
                            f"record is {size} bytes, over max_record_bytes {cfg.max_record_bytes}", _lossy(head))
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        return _problem_row(rel, None, fmt, "invalid_utf8", f"invalid UTF-8 at byte {error.start}", _lossy(data))
    return {"file": rel, "line": None, "format": fmt, "code_language": language, "raw": None, "text": text,
            "excerpt": None, "reason_code": None, "reason": None}


def _decode_html(payload: bytes, charset: str | None) -> str:
    """The declared charset when it decodes the bytes, else the one resiliparse detects (then UTF-8, Latin-1)."""
    if charset:
        try:
            return payload.decode(charset)
        except (LookupError, UnicodeDecodeError):
            pass
    return bytes_to_str(payload, detect_encoding(payload))


def _warc_candidates(rel: str, path: Path, cfg: IngestConfig, batch_rows: int = 1 << 62) -> Iterator[pl.DataFrame]:
    """WARC (plain or gzip), streamed with FastWARC: one candidate per response record, in file order (``line``
    is the record's number among the response records), in frames of at most ``batch_rows`` candidates. HTML
    responses carry their decoded page as ``text`` (the normalize stage extracts the main content); non-HTML,
    truncated (``WARC-Truncated`` or a failed block digest), oversized and unreadable records are problem rows
    naming the WARC record id."""
    rows: list[dict] = []
    number = 0
    try:
        # An object streams through its fsspec file; FastWARC detects gzip on either.
        stream = path.open("rb") if is_uri(path) else str(path)
        for record in ArchiveIterator(stream, record_types=WarcRecordType.response, parse_http=False):
            if len(rows) == batch_rows:
                yield pl.DataFrame(rows, schema=_CANDIDATE_SCHEMA)
                rows = []
            number += 1
            record_id = record.record_id
            # Digest first (it buffers the block), then the HTTP headers and the payload.
            digest_ok = "WARC-Block-Digest" not in record.headers or record.verify_block_digest(consume=False)
            record.parse_http()
            payload = record.reader.read()
            content_type = (record.http_content_type or "").lower() or None
            row = {"file": rel, "line": number, "format": "html", "code_language": None, "raw": None, "text": None,
                   "excerpt": None, "reason_code": None, "reason": None,
                   "url": record.headers.get("WARC-Target-URI"), "fetch_date": record.headers.get("WARC-Date"),
                   "content_type": content_type, "warc_record_id": record_id}
            truncated = record.headers.get("WARC-Truncated")
            if truncated or not digest_ok:
                why = f"WARC-Truncated: {truncated}" if truncated else "block digest mismatch: the record is cut short"
                row.update(reason_code="truncated_record", reason=f"truncated WARC record {record_id} ({why})",
                           excerpt=_lossy(payload))
            elif content_type not in _HTML_TYPES:
                row.update(reason_code="non_html_record",
                           reason=f"WARC record {record_id} is {content_type or 'without a content type'}, not HTML",
                           excerpt=_lossy(payload))
            elif len(payload) > cfg.max_record_bytes:
                row.update(reason_code="too_large", excerpt=_lossy(payload),
                           reason=f"WARC record {record_id} is {len(payload)} bytes, over max_record_bytes "
                                  f"{cfg.max_record_bytes}")
            else:
                row["text"] = _decode_html(payload, record.http_charset)
            rows.append(row)
    except Exception as error:  # FastWARC raises plain exceptions on corrupt streams; keep what was read
        rows.append(_problem_row(rel, number + 1, "warc", "corrupt_warc",
                                 f"corrupt WARC file after record {number} ({type(error).__name__}: {error}); "
                                 "the rest of the file could not be read", ""))
    for start in range(0, len(rows), batch_rows):  # the corrupt row may be one over
        yield pl.DataFrame(rows[start : start + batch_rows], schema=_CANDIDATE_SCHEMA)


def _candidates(files: list[tuple[str, Path]], manifest: Manifest, cfg: IngestConfig,
                batch_rows: int = 1 << 62) -> Iterator[pl.DataFrame]:
    """Every input record of the drop in sorted-file, file order, as frames of at most ``batch_rows`` candidates;
    problems found in the bytes are marked."""
    forced = manifest.format
    documents: list[dict] = []  # one-document-per-file rows, batched into one frame per run of such files

    def typed(part: pl.DataFrame) -> pl.DataFrame:
        return part.with_columns(pl.lit(None, dtype).alias(name) for name, dtype in _CANDIDATE_SCHEMA.items()
                                 if name not in part.columns).select(list(_CANDIDATE_SCHEMA)).cast(_CANDIDATE_SCHEMA)

    def sliced(part: pl.DataFrame) -> Iterator[pl.DataFrame]:
        for start in range(0, part.height, batch_rows):
            yield typed(part.slice(start, batch_rows))

    def flush_documents() -> Iterator[pl.DataFrame]:
        if documents:
            frame = pl.DataFrame(documents, schema=_CANDIDATE_SCHEMA)
            documents.clear()
            yield from sliced(frame)

    for rel, path in files:
        fmt, language = _file_format(rel, forced)
        try:
            if not path.is_file():  # a dangling symlink, pipe or device: reading it could fail or block
                documents.append(_problem_row(
                    rel, None, fmt, "unreadable_file",
                    "not a regular file (dangling symlink, pipe or device); replace it with the data file", ""))
            elif fmt is None:
                with path.open("rb") as handle:
                    head = handle.read(EXCERPT_CHARS * 4)
                documents.append(_problem_row(
                    rel, None, None, "unknown_format",
                    f"unknown file format (extension '{_extension(rel) or 'none'}'); convert it to JSONL, Parquet, "
                    "CSV, text, Markdown, HTML, WARC or a source file, or set `format:` in the manifest",
                    _lossy(head)))
            elif fmt == "warc":
                yield from flush_documents()
                yield from map(typed, _warc_candidates(rel, path, cfg, batch_rows))
            elif fmt == "jsonl":
                yield from flush_documents()
                for part in _line_candidates(rel, path, cfg, batch_rows):
                    yield from sliced(part)
            elif fmt in _RECORD_FORMATS:
                yield from flush_documents()
                yield from map(typed, _table_candidates(rel, path, fmt, batch_rows))
            else:
                documents.append(_document_candidate(rel, path, fmt, language, cfg))
                if len(documents) >= batch_rows:
                    yield from flush_documents()
        except OSError as error:  # unreadable file (permissions, dangling symlink): quarantined, never raised
            yield from flush_documents()
            yield typed(pl.DataFrame(
                [_problem_row(rel, None, fmt, "unreadable_file",
                              f"file could not be read ({error.strerror or error}); check its permissions", "")],
                schema=_CANDIDATE_SCHEMA))
    yield from flush_documents()


# ---------------------------------------------------------------------------------------------------------------
# Field extraction: one DuckDB query over every JSON record

_EXTRACT_SQL = """
-- ``doc`` is the record only where it is valid JSON; every JSON function below then sees valid JSON or NULL.
WITH parsed AS (
    SELECT row_nr, raw IS NOT NULL AND json_valid(raw) AS json_ok,
        CASE WHEN raw IS NOT NULL AND json_valid(raw) THEN raw END AS doc
    FROM candidates
), paths AS (
    -- Each JSON function parses its document again: one call per function over a list of paths parses it once.
    SELECT row_nr, json_ok, json_type(doc) AS root_type,
        json_type(doc, [$text_path, '/url', '/messages', '/conversations', '/prompt', '/response', '/system',
                        '/instruction', '/input', '/output', '/tests']) AS t,
        json_extract_string(doc, [$text_path, $id_path, $license_path, '/url', '/messages', '/conversations',
                                  '/prompt', '/response', '/system', '/instruction', '/input', '/output', '/tests'])
            AS s,
        json_extract(doc, ['/messages', '/conversations']) AS j,
        doc
    FROM parsed
), fields AS (
    SELECT row_nr, json_ok, root_type,
        t[1] AS text_type,
        s[1] AS field_text,
        s[2] AS record_id,
        s[3] AS record_license,
        CASE WHEN t[2] = 'VARCHAR' THEN s[4] END AS record_url,
        -- OpenAI-style `messages`, else ShareGPT-style `conversations` (see curation_platform.formatting).
        coalesce(t[3], t[4]) AS messages_type,
        coalesce(s[5], s[6]) AS messages_string,
        coalesce(j[1], j[2]) AS messages_json,
        CASE WHEN t[5] = 'VARCHAR' THEN s[7] END AS prompt,
        CASE WHEN t[6] = 'VARCHAR' THEN s[8] END AS response,
        CASE WHEN t[7] = 'VARCHAR' THEN s[9] END AS system_prompt,
        CASE WHEN t[8] = 'VARCHAR' THEN s[10] END AS instruction,
        CASE WHEN t[9] = 'VARCHAR' THEN s[11] END AS instruction_input,
        CASE WHEN t[10] = 'VARCHAR' THEN s[12] END AS output,
        CASE WHEN t[11] = 'VARCHAR' THEN s[13]
             WHEN t[11] = 'ARRAY'
             THEN array_to_string(json_extract_string(doc, '$.tests[*]'), chr(10)) END AS record_tests
    FROM paths
), turns AS (
    SELECT *,
        -- CSV cells can only carry the turns as a JSON string, so a string holding a JSON array counts too.
        json_extract(CASE WHEN messages_type = 'ARRAY' THEN messages_json
                          WHEN messages_type = 'VARCHAR' AND json_valid(messages_string)
                          THEN messages_string::JSON END,
                     '$[*]') AS items
    FROM fields
), shaped AS (
    SELECT *,
        -- ShareGPT items name the role `from` and the content `value`.
        list_transform(items, lambda m: {
            'role': CASE WHEN json_type(m, '/role') = 'VARCHAR' THEN json_extract_string(m, '/role')
                         WHEN json_type(m, '/from') = 'VARCHAR' THEN json_extract_string(m, '/from') END,
            'content': CASE WHEN json_type(m, '/content') = 'VARCHAR' THEN json_extract_string(m, '/content')
                            WHEN json_type(m, '/value') = 'VARCHAR' THEN json_extract_string(m, '/value') END
        }) AS raw_turns
    FROM turns
), chats AS (
    SELECT *,
        coalesce(len(raw_turns) > 0
            AND list_bool_and(list_transform(raw_turns, lambda m: m.role IS NOT NULL AND m.content IS NOT NULL))
            AND list_bool_or(list_transform(raw_turns, lambda m: coalesce(trim(m.content) <> '', false))),
            false) AS messages_ok
    FROM shaped
)
SELECT json_ok, root_type, text_type, field_text, record_id, record_license, record_url, record_tests,
    CASE WHEN messages_ok THEN raw_turns END AS chat_turns,
    prompt, response, system_prompt, instruction, instruction_input, output
FROM chats
ORDER BY row_nr
"""


def _json_pointer(field_name: str) -> str:
    """RFC 6901 pointer to a top-level key, so names with dots, spaces or slashes work."""
    return "/" + field_name.replace("~", "~0").replace("/", "~1")


def _extract_fields(candidates: pl.DataFrame, manifest: Manifest) -> pl.DataFrame:
    """Columns pulled from each candidate's JSON record (null where the candidate has no record)."""
    table = candidates.select(pl.int_range(pl.len(), dtype=pl.Int64).alias("row_nr"), "raw").to_arrow()
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")  # a long batch would print a progress bar to stdout
        con.register("candidates", table)
        extracted = con.sql(
            _EXTRACT_SQL,
            params={
                "text_path": _json_pointer(manifest.text_field),
                "id_path": _json_pointer(manifest.id_field),
                # Without a license field this pointer names no key, so record_license stays null.
                "license_path": _json_pointer(manifest.license_field or "\x00no license field"),
            },
        ).to_arrow_table()
    # Every chat shape into one `messages` column (the documented mapping lives in curation_platform.formatting).
    return pl.from_arrow(extracted).with_columns(
        pl.col("chat_turns").cast(MESSAGES_DTYPE),
        chat_messages(instruction_input="instruction_input").alias("chat_messages"),
    ).drop("chat_turns", "prompt", "response", "system_prompt", "instruction", "instruction_input", "output")


# ---------------------------------------------------------------------------------------------------------------
# Decisions


# DuckDB's names for JSON value types, in the words of the JSON spec.
_JSON_TYPE_NAMES = {"NULL": "null", "BOOLEAN": "a boolean", "BIGINT": "a number", "UBIGINT": "a number",
                    "DOUBLE": "a number", "ARRAY": "an array", "OBJECT": "an object", "VARCHAR": "a string"}


def _provenance_json(manifest: Manifest) -> str:
    provenance = dict(manifest.provenance)
    if manifest.generator is not None:
        provenance["generator"] = manifest.generator.model_dump()
    # YAML turns `collected_at: 2024-05-01` into a date; ISO text keeps it readable and JSON-able.
    return json.dumps(provenance, sort_keys=True, ensure_ascii=False,
                      default=lambda value: value.isoformat() if hasattr(value, "isoformat") else str(value))


def _decide(candidates: pl.DataFrame, fields: pl.DataFrame, manifest: Manifest, cfg: IngestConfig) -> pl.DataFrame:
    """Candidates plus the final text, messages, source_id, license and (for quarantined rows) the reason."""
    chat = manifest.kind == "chat" or manifest.format == "chat"
    text_field = manifest.text_field
    is_record = pl.col("raw").is_not_null()
    rendered = render_plain(pl.col("chat_messages"))
    frame = pl.concat([candidates, fields], how="horizontal").with_columns(
        text=(rendered if chat else pl.when(is_record).then(pl.col("field_text")).otherwise(pl.col("text"))),
        messages=pl.col("chat_messages") if chat else pl.lit(None, dtype=MESSAGES_DTYPE),
        format=pl.lit("chat") if chat else pl.col("format"),
        license_raw=(pl.col("record_license") if manifest.per_record_license else pl.lit(manifest.license)),
        url=pl.coalesce("url", "record_url"),  # a WARC target URI, or a JSON record's top-level `url`
        tests=pl.col("record_tests"),  # generated code's tests, run by the verification sandbox
        source_id=pl.coalesce(
            "warc_record_id",
            pl.when(pl.col("record_id").str.strip_chars() != "").then(pl.col("record_id")),
            pl.when(pl.col("line").is_not_null())
            .then(pl.format("{}:{}", pl.col("file"), pl.col("line")))
            .otherwise(pl.col("file")),
        ),
    )
    frame = frame.with_columns(license=normalize_license(frame["license_raw"]))
    # The few unknown license strings get the closest known id, so the quarantine message names a likely fix.
    unknown_raw = frame.filter(pl.col("license").is_null())["license_raw"].drop_nulls().unique()
    closest = dict(zip(unknown_raw.to_list(), closest_license(unknown_raw).to_list()))

    record_bytes = pl.coalesce("raw", "text").str.len_bytes()
    stripped_chars = pl.col("text").str.strip_chars().str.len_chars()
    license_hint = (f"field '{manifest.license_field}'" if manifest.per_record_license else "manifest `license`")
    rules: list[tuple[pl.Expr, str, pl.Expr]] = [
        (is_record & ~pl.col("json_ok"), "malformed_json", pl.lit("malformed JSON: the line is not valid JSON")),
        (is_record & (pl.col("root_type") != "OBJECT"), "not_an_object",
         pl.format("record is {} in JSON, not an object", pl.col("root_type").replace(_JSON_TYPE_NAMES))),
    ]
    if chat:
        rules.append((pl.col("chat_messages").is_null(), "unusable_chat",
                      pl.lit("chat record without usable messages ([{role, content}] strings with some content), "
                             "conversations ([{from, value}]), non-empty prompt and response strings, or "
                             "instruction and output strings")))
        rules += chat_problems(pl.col("chat_messages"))
    else:
        rules += [
            (is_record & pl.col("text_type").is_null(), "missing_text",
             pl.lit(f"text field '{text_field}' is missing; set `text_field` in the manifest if it has another name")),
            (is_record & (pl.col("text_type") != "VARCHAR"), "non_string_text",
             pl.format(f"text field '{text_field}' is {{}}, not a string",
                       pl.col("text_type").replace(_JSON_TYPE_NAMES))),
        ]
    rules += [
        # JSON lines were measured while reading; Parquet and CSV rows are measured here as their JSON form.
        (record_bytes > cfg.max_record_bytes, "too_large",
         pl.format("record is {} bytes, over max_record_bytes {}", record_bytes, pl.lit(cfg.max_record_bytes))),
        (stripped_chars < cfg.min_text_chars, "empty_text",
         pl.format("empty text ({} characters after stripping whitespace, min_text_chars {})", stripped_chars,
                   pl.lit(cfg.min_text_chars))),
        (pl.col("license_raw").is_null() | (pl.col("license_raw").str.strip_chars() == ""), "missing_license",
         pl.lit(f"license missing ({license_hint} is empty or absent)")),
        (pl.col("license").is_null(), "unknown_license",
         pl.format("unknown license '{}' ({}); closest known id: {}; use an SPDX id or expression",
                   pl.col("license_raw"), pl.lit(license_hint),
                   pl.col("license_raw").replace_strict(closest, default="(none)", return_dtype=pl.String))),
    ]
    # Problems found in the bytes win, then the first rule that matches: JSON shape, text, size, license last.
    already = pl.col("reason_code").is_not_null()
    code = pl.when(already).then(pl.col("reason_code"))
    reason = pl.when(already).then(pl.col("reason"))
    for condition, rule_code, message in rules:
        code = code.when(condition.fill_null(False)).then(pl.lit(rule_code))
        reason = reason.when(condition.fill_null(False)).then(message)
    return frame.with_columns(code.alias("reason_code"), reason.alias("reason"))


def _doc_keys(kept: pl.DataFrame, source: str, drop: str) -> pl.Series:
    key = pl.concat_str([pl.lit(source), pl.lit(drop), pl.col("source_id"), pl.col("text")], separator="\x1f")
    return kept.select(key.alias("key"))["key"]


def _with_doc_ids(kept: pl.DataFrame, source: str, drop: str, seen: pl.DataFrame) -> tuple[pl.Series, pl.DataFrame]:
    """xxh128 of ``source \x1f drop \x1f source_id \x1f text``; the n-th repeat (n >= 2) of a (source_id, text)
    pair in the drop gets ``\x1f<n>`` appended so every input record keeps its own id. The drop is part of the key
    because a record republished in a later drop is a second record (an exact duplicate of the first), and
    fallback source ids such as ``part-0000.jsonl:1`` repeat across drops. ``seen`` counts the base hashes of the
    earlier batches (``h``, ``n``); returns the ids and the updated counts."""
    base = kept["_base_id"] if "_base_id" in kept.columns else xxh128_hex(_doc_keys(kept, source, drop))
    hashes = pl.DataFrame({"h": base})
    earlier = hashes.join(seen, on="h", how="left", maintain_order="left")["n"].fill_null(0)
    occurrence = hashes.select(pl.int_range(pl.len()).over("h") + 1).to_series() + earlier
    seen = pl.concat([seen, hashes.group_by("h").agg(pl.len().cast(pl.Int64).alias("n"))]).group_by("h").agg(
        pl.col("n").sum())
    if len(occurrence) == 0 or int(occurrence.max() or 1) == 1:
        return base.alias("doc_id"), seen
    suffixed = pl.DataFrame({"k": _doc_keys(kept, source, drop), "n": occurrence}).select(
        pl.when(pl.col("n") > 1).then(pl.format("{}\x1f{}", "k", "n")).otherwise("k")
    ).to_series()
    return xxh128_hex(suffixed).alias("doc_id"), seen


@dataclass
class IngestBatch(IngestResult):
    """One batch of ``read_drop_batches``: its records and quarantine rows, and ``input_ids``: the doc_ids of every
    input record of the batch (read or quarantined) in input order."""

    input_ids: pl.Series = field(default_factory=lambda: pl.Series("doc_id", [], pl.String))


def _nonempty_drop(batches: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The candidate batches, or one empty batch for a drop without any."""
    empty = True
    for batch in batches:
        empty = False
        yield batch
    if empty:
        yield pl.DataFrame(schema=_CANDIDATE_SCHEMA)


def _decided_batch(candidates: pl.DataFrame | pa.Table, manifest: Manifest, cfg: IngestConfig, drop: str
                   ) -> tuple[int, pa.Table, pa.Table]:
    """One batch of candidates decided (maybe in a worker process): (candidates read, the kept rows with their
    ingest columns, ``_row`` and ``_base_id`` (the doc-id hash before numbering repeats), the rejected rows), both
    as Arrow tables (cheaper to send back than Polars frames)."""
    candidates = pl.from_arrow(candidates) if isinstance(candidates, pa.Table) else candidates
    decided = _decide(candidates, _extract_fields(candidates, manifest), manifest, cfg).with_row_index("_row")
    kept = decided.filter(pl.col("reason_code").is_null())
    kept = kept.select("_row", *[c for c in INGEST_SCHEMA if c in kept.columns]).with_columns(
        xxh128_hex(_doc_keys(kept, manifest.source, drop)).alias("_base_id"))
    return len(candidates), kept.to_arrow(), decided.filter(pl.col("reason_code").is_not_null()).to_arrow()


def read_drop_batches(drop_dir: Path, cfg: IngestConfig, drop: str | None = None,
                      batch_rows: int = 1 << 62, workers: int = 1) -> Iterator[IngestBatch]:
    """``read_drop`` as batches of at most ``batch_rows`` input records, in input order (see the module docstring).
    Their records and quarantine rows concatenated are exactly ``read_drop``'s. With ``workers`` > 1 the batches
    are decided (JSON fields, rules, hashes) in the local executor's worker pool; the results are the same."""
    drop_dir = as_path(drop_dir)
    manifest = load_manifest(drop_dir)
    drop = drop or drop_dir.name
    files = _data_files(drop_dir)
    constants = {
        "source": pl.lit(manifest.source),
        "drop": pl.lit(drop),
        "kind": pl.lit(manifest.kind),
        "provenance": pl.lit(_provenance_json(manifest)),
        "declared_language": pl.lit(manifest.language, dtype=pl.String),
    }
    seen = pl.DataFrame(schema={"h": pl.String, "n": pl.Int64})
    first = True
    # Deciding a batch needs nothing from the batches before it (only the doc-id numbering does, done here), so the
    # batches are decided in the worker pool when there are workers, their candidates sent as Arrow tables.
    batches = _nonempty_drop(_candidates(files, manifest, cfg, batch_rows))
    decide = functools.partial(_decided_batch, manifest=manifest, cfg=cfg, drop=drop)
    if workers > 1:
        from curation_platform.executors.local import map_in_order

        decided_batches = map_in_order(decide, (batch.to_arrow() for batch in batches), workers,
                                       label=f"ingest of drop '{drop}'")
    else:
        decided_batches = map(decide, batches)
    for read_count, kept, rejected in decided_batches:
        kept, rejected = pl.from_arrow(kept), pl.from_arrow(rejected)
        doc_ids, seen = _with_doc_ids(kept, manifest.source, drop, seen)
        records = kept.with_columns(doc_ids, **constants)
        quarantine_key = pl.concat_str(
            [pl.lit(manifest.source), pl.lit(drop), pl.col("file"), pl.col("line").cast(pl.String).fill_null("")],
            separator="\x1f",
        )
        quarantine = rejected.with_columns(
            doc_id=xxh128_hex(rejected.select(quarantine_key.alias("k"))["k"]),
            excerpt=pl.coalesce("excerpt", "raw", "text").str.slice(0, EXCERPT_CHARS).fill_null(""),
            license=pl.col("license_raw"),
            **{name: constants[name] for name in ("source", "drop")},
        )
        input_ids = pl.concat([records.select("_row", "doc_id"), quarantine.select("_row", "doc_id")]).sort(
            "_row")["doc_id"]
        records = records.select(pl.col(name).cast(dtype) for name, dtype in INGEST_SCHEMA.items())
        quarantine = quarantine.select(pl.col(name).cast(dtype) for name, dtype in QUARANTINE_SCHEMA.items())
        reasons = rejected.group_by("reason_code").len().sort("reason_code")
        formats = records.group_by("format").len().sort("format")
        metrics = {
            "read_count": read_count,
            "records": len(records),
            "quarantined": len(quarantine),
            **({"files": len(files)} if first else {}),
            "records_per_format": dict(zip(formats["format"].to_list(), formats["len"].to_list())),
            "quarantined_per_reason": dict(zip(reasons["reason_code"].to_list(), reasons["len"].to_list())),
            "text_bytes": int(records["text"].str.len_bytes().sum() or 0),
        }
        first = False
        yield IngestBatch(records=records, quarantine=quarantine, read_count=read_count, metrics=metrics,
                          input_ids=input_ids)


def read_drop(drop_dir: Path, cfg: IngestConfig, drop: str | None = None) -> IngestResult:
    """Read every data file of a drop into canonical records and quarantine rows.

    ``drop_dir`` holds ``manifest.yaml`` and the data files; ``drop`` names the drop (default: the folder name).
    Returns ``records`` with exactly the INGEST_SCHEMA columns in order (RECORD_SCHEMA, web provenance, tests),
    ``quarantine`` with QUARANTINE_SCHEMA
    (one row per rejected input record, naming file, line and reason), and ``read_count``, the number of input
    records seen, which always equals ``len(records) + len(quarantine)``. Files are read in sorted relative-path
    order and records in file order, so the same drop always gives identical frames.

    Raises ManifestError for a missing or invalid manifest and UnsafePathError when a path escapes the drop.
    """
    batches = list(read_drop_batches(drop_dir, cfg, drop))
    metrics: dict[str, Any] = {}
    for batch in batches:
        for key, value in batch.metrics.items():
            if isinstance(value, dict):
                merged = metrics.setdefault(key, {})
                for k, v in value.items():
                    merged[k] = merged.get(k, 0) + v
            else:
                metrics[key] = metrics.get(key, 0) + value
    for key in ("records_per_format", "quarantined_per_reason"):
        metrics[key] = dict(sorted(metrics.get(key, {}).items()))
    return IngestResult(records=pl.concat([b.records for b in batches]),
                        quarantine=pl.concat([b.quarantine for b in batches]),
                        read_count=sum(b.read_count for b in batches), metrics=metrics)
