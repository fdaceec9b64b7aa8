"""Writing the exposition, in the Prometheus text format (0.0.4) or OpenMetrics 1.0, plain
or gzip-compressed, from pieces that are written again only when their values change.

Bin, class and drift-score series are many (thousands per server) and their label sets are
fixed when a model version loads, so each series' ``name{labels} `` prefix is formatted
once and a scrape only appends values. This keeps /metrics fast where prometheus_client's
generic path (a Sample object and a label formatting per series per scrape) is not.

A scrape's body is a list of ``Piece``s: one per family header, and one per family and
model version holding that version's sample lines. A piece whose values did not change
since the last scrape is reused as it is, text and compressed bytes alike, so a scrape
writes and compresses only what changed (an idle version's series, the reference shares,
a drift report until the next score). The sample lines are the same in both formats; only
the family headers and the ``# EOF`` trailer differ.

Compression: runs of pieces are deflated on their own (``Z_FULL_FLUSH``: their bytes refer
to nothing before them), so the compressed bytes of unchanged runs are reused and joined
into one deflate stream, closed and wrapped as a single gzip member (RFC 1952): any gzip
reader decodes it, where a concatenation of gzip members would be cut short by some.
"""

from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client.utils import floatToGoString

#: The two formats a scraper can ask for (``Accept``), and the content type of each.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
#: gzip level of the pieces: level 1 writes a 3.9 MB exposition at ~95 MB/s into 236 kB,
#: level 6 at ~23 MB/s into 203 kB (measured on the benchmark machine).
GZIP_LEVEL = 1
#: The longest a scrape holds the GIL at a time (``Slicer``).
SLICE_SECONDS = 0.0005


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str, openmetrics: bool = False) -> str:
    """HELP text: OpenMetrics escapes double quotes too."""
    escaped = text.replace("\\", "\\\\").replace("\n", "\\n")
    return escaped.replace('"', '\\"') if openmetrics else escaped


def series_prefix(name: str, labelnames: Sequence[str], values: Sequence[str], sort: bool = False) -> str:
    """``name{labels} ``; ``sort``: labels in name order, as prometheus_client writes them."""
    pairs = list(zip(labelnames, values, strict=True))
    if sort:
        pairs.sort()
    if not pairs:
        return f"{name} "
    labels = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in pairs)
    return f"{name}{{{labels}}} "


def sample_name(family: str, kind: str) -> str:
    """The name of a counter's samples carries ``_total``; other kinds' (histograms aside)
    are the family's name."""
    return f"{family}_total" if kind == "counter" else family


def family_header(name: str, documentation: str, kind: str, openmetrics: bool = False) -> str:
    """HELP and TYPE of family ``name`` (a counter's without ``_total``). The text format
    names a counter by its samples (``_total``), as prometheus_client does; OpenMetrics by
    the family."""
    named = name if openmetrics else sample_name(name, kind)
    return f"# HELP {named} {escape_help(documentation, openmetrics)}\n# TYPE {named} {kind}\n"


def sample_lines(prefixes: Sequence[str], values: Sequence[float]) -> str:
    """``prefix value`` lines. Finite values are written by ``repr``, a C loop over the
    whole family (prometheus_client's ``floatToGoString`` per value cost most of a scrape's
    time here); it differs from that only in writing numbers of seven or more integer
    digits without an exponent, which Prometheus reads as the same value. NaN and the
    infinities are written as Prometheus spells them."""
    if len(prefixes) != len(values):
        raise ValueError(f"{len(prefixes)} series but {len(values)} values")
    if not prefixes:
        return ""
    array = np.asarray(values, dtype=np.float64)
    texts = map(float.__repr__, array.tolist()) if np.isfinite(array).all() else map(floatToGoString, array.tolist())
    return "\n".join(map(str.__add__, prefixes, texts)) + "\n"


class Piece:
    """A run of exposition bytes. A piece is kept while its text stays the same, so that its
    identity says "unchanged" to the compressor (``Deflater``)."""

    __slots__ = ("text",)

    def __init__(self, text: bytes) -> None:
        self.text = text


def changed(previous: Piece | None, text: bytes) -> Piece:
    """``previous`` if it holds ``text`` already, else a new piece."""
    return previous if previous is not None and previous.text == text else Piece(text)


class Slicer:
    """Makes a scrape's thread give the GIL away at least every ``seconds`` of its work.

    The scrape runs in a worker thread, but Python runs one thread at a time: an event loop
    that wants the GIL while the scrape holds it waits until the scrape releases it, for up
    to the interpreter's switch interval (5 ms). Called between pieces of work (every few
    dozen microseconds of it), this releases it once ``seconds`` have passed
    (``time.sleep(0)``), so a request waits about that long at most; when the loop is idle
    the release costs a few microseconds."""

    __slots__ = ("deadline", "seconds")

    def __init__(self, seconds: float = SLICE_SECONDS) -> None:
        self.seconds = seconds
        self.deadline = time.perf_counter() + seconds

    def __call__(self) -> None:
        if time.perf_counter() >= self.deadline:
            time.sleep(0)
            self.deadline = time.perf_counter() + self.seconds


def _multmodp(a: int, b: int) -> int:
    """a times b modulo the CRC-32 polynomial (reflected), as zlib's crc32.c computes it."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ 0xEDB88320 if b & 1 else b >> 1


def _x2n_table() -> list[int]:
    table, p = [], 1 << 30  # x^1
    for _ in range(32):
        table.append(p)
        p = _multmodp(p, p)
    return table


_X2N = _x2n_table()


class CrcCombiner:
    """``crc32(a + b)`` from ``crc32(a)``, ``crc32(b)`` and ``len(b)`` (zlib's
    ``crc32_combine``, which Python's zlib does not expose): a scrape combines the cached
    CRCs of its runs instead of reading all their bytes again.

    Combining multiplies ``crc32(a)`` by x^(8 len(b)) modulo the CRC polynomial. For each
    length, the products of that operator with each power x^k are kept as eight tables of
    16 (a nibble of ``crc32(a)`` each), so a combine is eight lookups: unchanged runs keep
    their lengths, so their tables are reused from scrape to scrape."""

    def __init__(self) -> None:
        self._tables: dict[int, list[list[int]]] = {}

    def _tables_for(self, length: int) -> list[list[int]]:
        tables = self._tables.get(length)
        if tables is None:
            op, n, k = 1 << 31, length, 3  # x^(8 * length): x^(2^k) for each bit of 8 * length
            while n:
                if n & 1:
                    op = _multmodp(_X2N[k & 31], op)
                n >>= 1
                k += 1
            powers = [op]  # op * x^k, k = 0..31
            for _ in range(31):
                v = powers[-1]
                powers.append((v >> 1) ^ 0xEDB88320 if v & 1 else v >> 1)
            tables = []
            for j in range(8):  # nibble j of a CRC holds the coefficients of x^(4j) .. x^(4j+3)
                table = [0] * 16
                for value in range(1, 16):
                    acc = 0
                    for t in range(4):
                        if value & (8 >> t):
                            acc ^= powers[4 * j + t]
                    table[value] = acc
                tables.append(table)
            if len(self._tables) > 50_000:
                self._tables.clear()
            self._tables[length] = tables
        return tables

    def combine(self, crc1: int, crc2: int, length2: int) -> int:
        if not length2:
            return crc1
        t = self._tables_for(length2)
        return (t[0][crc1 >> 28] ^ t[1][(crc1 >> 24) & 15] ^ t[2][(crc1 >> 20) & 15] ^ t[3][(crc1 >> 16) & 15]
                ^ t[4][(crc1 >> 12) & 15] ^ t[5][(crc1 >> 8) & 15] ^ t[6][(crc1 >> 4) & 15] ^ t[7][crc1 & 15] ^ crc2)


class Deflater:
    """gzip bodies from pieces, reusing the compressed bytes of unchanged pieces.

    The pieces are taken ``CHUNK`` at a time by position (the same versions of a family,
    mostly: the body is family by family, version by version), and each run is deflated on
    its own, fully flushed: that byte-aligns the stream and forgets the history, so a run's
    bytes decode the same wherever they are placed. A run whose pieces are all the ones of
    the last scrape reuses its bytes and its CRC. In a run holding pieces that are new since
    the last scrape (a version with traffic), each new piece is deflated alone and the
    unchanged stretches around it keep their bytes from the scrape before, so an active
    version costs the compression of its own changed pieces. Runs of 16 pieces compress a
    40-version exposition into 243 kB, where deflating it whole gives 236 kB and piece by
    piece 375 kB (level 1). Used by one scrape at a time (``ServerMetrics.scrape``)."""

    CHUNK = 16
    #: A final, empty deflate block: closes a stream of fully flushed runs.
    FINAL = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    #: gzip member header: magic, deflate, no flags, no time, no extra flags, unknown OS.
    HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

    def __init__(self, level: int = GZIP_LEVEL) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, -15)
        self._crc = CrcCombiner()
        #: Per body kind (text, OpenMetrics), of the last scrape: its pieces, and its runs and
        #: stretches of pieces with their deflated bytes, CRC and length.
        self._last: dict[object, tuple[set[Piece], dict[tuple[Piece, ...], _Deflated]]] = {}

    def deflate(self, data: bytes) -> bytes:
        if not data:
            return b""
        return self._compressor.compress(data) + self._compressor.flush(zlib.Z_FULL_FLUSH)

    def _deflated(self, pieces: tuple[Piece, ...]) -> _Deflated:
        text = b"".join(p.text for p in pieces)
        return self.deflate(text), zlib.crc32(text), len(text)

    def gzip(self, pieces: Sequence[Piece], kind: object = None, pause: Callable[[], None] = lambda: None) -> bytes:
        """One gzip member holding every piece's text; ``pause`` is called between runs."""
        seen, before = self._last.get(kind, (None, {}))
        done: dict[tuple[Piece, ...], _Deflated] = {}
        crc, size, parts = 0, 0, [self.HEADER]
        for start in range(0, len(pieces), self.CHUNK):
            run = tuple(pieces[start : start + self.CHUNK])
            deflated = done.get(run) or before.get(run)
            if deflated is None:
                if seen is None or all(p in seen for p in run):  # the first scrape, or a new layout
                    deflated = self._deflated(run)
                else:
                    deflated = self._mixed(run, seen, before, done)
            done[run] = deflated
            parts.append(deflated[0])
            crc = self._crc.combine(crc, deflated[1], deflated[2])
            size += deflated[2]
            pause()
        self._last[kind] = (set(pieces), done)
        parts += [self.FINAL, struct.pack("<II", crc, size & 0xFFFFFFFF)]
        return b"".join(parts)

    def _mixed(
        self,
        run: tuple[Piece, ...],
        seen: set[Piece],
        before: dict[tuple[Piece, ...], _Deflated],
        done: dict[tuple[Piece, ...], _Deflated],
    ) -> _Deflated:
        """A run holding new pieces: each new piece alone, the stretches of old ones between
        them as they were deflated last time."""
        stretches: list[tuple[Piece, ...]] = []
        current: list[Piece] = []
        for piece in run:
            if piece in seen:
                current.append(piece)
                continue
            if current:
                stretches.append(tuple(current))
                current = []
            stretches.append((piece,))
        if current:
            stretches.append(tuple(current))
        parts, crc, size = [], 0, 0
        for stretch in stretches:
            deflated = done.get(stretch) or before.get(stretch) or self._deflated(stretch)
            done[stretch] = deflated
            parts.append(deflated[0])
            crc = self._crc.combine(crc, deflated[1], deflated[2])
            size += deflated[2]
        return b"".join(parts), crc, size


#: A run's deflated bytes, the CRC-32 of its text and the text's length.
_Deflated = tuple[bytes, int, int]


@dataclass(frozen=True, slots=True)
class Body:
    """One scrape's exposition as the pieces it is made of."""

    pieces: list[Piece]
    openmetrics: bool

    @property
    def content_type(self) -> str:
        return OPENMETRICS_CONTENT_TYPE if self.openmetrics else TEXT_CONTENT_TYPE

    def plain(self) -> bytes:
        return b"".join(piece.text for piece in self.pieces)

    def gzip(self, compressor: Deflater, pause: Callable[[], None] = lambda: None) -> bytes:
        return compressor.gzip(self.pieces, self.openmetrics, pause)


def _listed(header: str | None, token: str, lower: bool = False) -> bool:
    """Whether a comma-separated header lists ``token`` with a q-value above zero."""
    for part in (header or "").split(","):
        value, *params = part.split(";")
        value = value.strip().lower() if lower else value.strip()
        if value != token:
            continue
        q = next((p.split("=", 1)[1].strip() for p in params if p.strip().startswith("q=")), "1")
        try:
            if float(q) > 0:
                return True
        except ValueError:
            return True
    return False


def wants_openmetrics(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for OpenMetrics text: listed at all (with a q-value
    above zero), as prometheus_client's own handler decides; Prometheus lists it first."""
    return _listed(accept, "application/openmetrics-text")


def wants_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header lists gzip, as prometheus_client's handler decides
    (and not with ``q=0``)."""
    return _listed(accept_encoding, "gzip", lower=True)
