"""Form bodies: urlencoded and multipart, streamed through python-multipart."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import IO, Any
from urllib.parse import parse_qsl

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from wirehall.datastructures import Headers
from wirehall.errors import HTTPError

__all__ = ["FormData", "UploadFile", "parse_form"]

_SPOOL_SIZE = 1024 * 1024


class UploadFile:
    """An uploaded file, spooled to a temporary file past 1 MiB."""

    def __init__(self, filename: str, content_type: str, headers: Headers) -> None:
        self.filename = filename
        self.content_type = content_type
        self.headers = headers
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_SIZE)  # noqa: SIM115
        self.size = 0

    @property
    def _in_memory(self) -> bool:
        return not getattr(self.file, "_rolled", True)

    async def _run(self, func: Any, *args: Any) -> Any:
        if self._in_memory:
            return func(*args)
        return await asyncio.to_thread(func, *args)

    async def write(self, data: bytes) -> None:
        """Append `data` (used while parsing)."""
        self.size += len(data)
        await self._run(self.file.write, data)

    async def read(self, size: int = -1) -> bytes:
        """Read from the current position."""
        return await self._run(self.file.read, size)  # type: ignore[no-any-return]

    async def seek(self, offset: int) -> None:
        """Move the read position."""
        await self._run(self.file.seek, offset)

    async def close(self) -> None:
        """Delete the temporary file."""
        await self._run(self.file.close)

    def __repr__(self) -> str:
        return f"UploadFile(filename={self.filename!r}, size={self.size}, content_type={self.content_type!r})"


class FormData:
    """Form fields (str) and uploads (`UploadFile`); repeated names are kept."""

    def __init__(self, items: Sequence[tuple[str, str | UploadFile]] = ()) -> None:
        self._items = list(items)

    def get(self, name: str, default: Any = None) -> str | UploadFile | Any:
        """The last value named `name`."""
        for key, value in reversed(self._items):
            if key == name:
                return value
        return default

    def __getitem__(self, name: str) -> str | UploadFile:
        value = self.get(name, _MISSING)
        if value is _MISSING:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return any(key == name for key, _ in self._items)

    def getlist(self, name: str) -> list[str | UploadFile]:
        """Every value named `name`, in order."""
        return [value for key, value in self._items if key == name]

    def multi_items(self) -> list[tuple[str, str | UploadFile]]:
        """All (name, value) pairs."""
        return list(self._items)

    def keys(self) -> list[str]:
        """The distinct field names, in order."""
        return list(dict.fromkeys(key for key, _ in self._items))

    async def close(self) -> None:
        """Close every upload."""
        for _, value in self._items:
            if isinstance(value, UploadFile):
                await value.close()


_MISSING = object()


async def parse_form(
    content_type: str, stream: AsyncIterator[bytes], *, max_files: int, max_fields: int
) -> FormData:
    """Parse a form body; a malformed one is an HTTPError 400, an unsupported type 415."""
    media, options = parse_options_header(content_type)
    if media == b"application/x-www-form-urlencoded":
        body = b"".join([chunk async for chunk in stream])
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=max_fields)
        except (UnicodeDecodeError, ValueError) as exc:
            raise HTTPError(400, f"the form body could not be read: {exc}") from exc
        return FormData(pairs)
    if media == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise HTTPError(400, "multipart form without a boundary in its Content-Type")
        return await _parse_multipart(boundary, stream, max_files=max_files, max_fields=max_fields)
    raise HTTPError(
        415,
        f"cannot read a form from Content-Type {content_type!r}; "
        "send application/x-www-form-urlencoded or multipart/form-data",
    )


class _MultipartForm:
    """The python-multipart callbacks for one form: parts collected, limits enforced."""

    def __init__(self, *, max_files: int, max_fields: int) -> None:
        self.max_files = max_files
        self.max_fields = max_fields
        self.files = 0
        self.fields = 0
        self.items: list[tuple[str, str | UploadFile]] = []
        self.header_field = b""
        self.header_value = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.data = bytearray()
        self.current: UploadFile | None = None
        self.name = ""
        self.pending: list[tuple[UploadFile, bytes]] = []
        self.done_parts: list[tuple[str, UploadFile | bytes]] = []
        self.created: list[UploadFile] = []
        self.ended = False

    def on_part_begin(self) -> None:
        self.headers = []
        self.data = bytearray()
        self.current = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers.append((self.header_field.lower(), self.header_value))
        self.header_field = b""
        self.header_value = b""

    def on_headers_finished(self) -> None:
        headers = dict(self.headers)
        _, params = parse_options_header(headers.get(b"content-disposition", b""))
        self.name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        if filename is None:
            self.fields += 1
            if self.fields > self.max_fields:
                raise HTTPError(413, f"too many fields in the form (at most {self.max_fields})")
            return
        self.files += 1
        if self.files > self.max_files:
            raise HTTPError(413, f"too many files in the form (at most {self.max_files})")
        content_type = headers.get(b"content-type", b"application/octet-stream")
        self.current = UploadFile(
            filename.decode("utf-8", "replace"), content_type.decode("latin-1"), Headers(self.headers)
        )
        self.created.append(self.current)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.current is not None:
            self.pending.append((self.current, bytes(data[start:end])))
        else:
            self.data += data[start:end]

    def on_part_end(self) -> None:
        value = self.current if self.current is not None else bytes(self.data)
        self.done_parts.append((self.name, value))

    def on_end(self) -> None:
        self.ended = True

    async def flush(self) -> None:
        """Write what the last chunk gave to the upload files; collect the finished parts."""
        for upload, data in self.pending:
            await upload.write(data)
        self.pending.clear()
        for name, value in self.done_parts:
            if isinstance(value, UploadFile):
                await value.seek(0)
                self.items.append((name, value))
            else:
                self.items.append((name, value.decode("utf-8", "replace")))
        self.done_parts.clear()


async def _parse_multipart(
    boundary: bytes, stream: AsyncIterator[bytes], *, max_files: int, max_fields: int
) -> FormData:
    form = _MultipartForm(max_files=max_files, max_fields=max_fields)
    parser = MultipartParser(
        boundary,
        {
            "on_end": form.on_end,
            "on_part_begin": form.on_part_begin,
            "on_part_data": form.on_part_data,
            "on_part_end": form.on_part_end,
            "on_header_field": form.on_header_field,
            "on_header_value": form.on_header_value,
            "on_header_end": form.on_header_end,
            "on_headers_finished": form.on_headers_finished,
        },
    )
    try:
        async for chunk in stream:
            try:
                parser.write(chunk)
            except MultipartParseError as exc:
                raise HTTPError(400, f"the multipart body is malformed: {exc}") from exc
            await form.flush()
        parser.finalize()
        if not form.ended:
            raise HTTPError(400, "the multipart body ended before its closing boundary")
    except BaseException:
        for upload in form.created:
            await upload.close()
        raise
    return FormData(form.items)
