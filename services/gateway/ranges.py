"""The HTTP bits of a disk download (GET /api/v1/backups/{id}/disks/{disk}): one `Range` of
bytes (RFC 9110, 416 when it cannot be served) and the file name (RFC 6266)."""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII `filename` for old clients, the exact name as RFC 5987 `filename*`."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\/;' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _unsatisfiable(size: int, detail: str) -> web.HTTPRequestRangeNotSatisfiable:
    return web.HTTPRequestRangeNotSatisfiable(text=detail, headers={"Content-Range": f"bytes */{size}"})


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(offset, length) of a single `bytes=` range; None for no header; 416 when unsatisfiable."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        raise _unsatisfiable(size, "only one range in bytes is supported")
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            start, end = max(0, size - n), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
    except ValueError:
        raise _unsatisfiable(size, f"range {header!r} is malformed") from None
    end = min(end, size - 1)
    if start >= size or start > end or start < 0:
        raise _unsatisfiable(size, f"range {header!r} is outside the disk ({size} bytes)")
    return start, end - start + 1
