from __future__ import annotations

import gc
import warnings
from collections.abc import AsyncIterator

import pytest

from wirehall.errors import HTTPError
from wirehall.http.forms import FormData, UploadFile, parse_form

BOUNDARY = "----wirehallboundary7MA4YWxk"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def multipart(*parts: tuple[str, str | None, bytes, str | None], close: bool = True) -> bytes:
    """Build a multipart body from (name, filename, content, content type)."""
    out = b""
    for name, filename, content, content_type in parts:
        out += f"--{BOUNDARY}\r\n".encode()
        disposition = f'Content-Disposition: form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += disposition.encode() + b"\r\n"
        if content_type is not None:
            out += f"Content-Type: {content_type}\r\n".encode()
        out += b"\r\n" + content + b"\r\n"
    if close:
        out += f"--{BOUNDARY}--\r\n".encode()
    return out


async def refused(body: bytes, content_type: str = MULTIPART, **limits: int) -> tuple[int, str]:
    """Parse a form that must be refused: (status, detail). Fails when an upload file is left open."""
    status, detail = 0, ""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        try:
            form = await parse(body, content_type, **limits)
        except HTTPError as exc:
            status, detail = exc.status, exc.detail
        else:
            await form.close()
            del form
        gc.collect()  # the parse is over: whatever it opened must be closed by now
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert status != 0, "the form was accepted" + (f" (and left upload files open: {leaks})" if leaks else "")
    assert leaks == [], f"upload files left open: {leaks}"
    return status, detail


async def parse(body: bytes, content_type: str = MULTIPART, *, split: int = 0, **limits: int) -> FormData:
    pieces = [body[i : i + split] for i in range(0, len(body), split)] if split else [body]
    limits.setdefault("max_files", 100)
    limits.setdefault("max_fields", 1000)
    return await parse_form(content_type, chunks(*pieces), **limits)


async def test_urlencoded_fields_repeated_and_blank() -> None:
    form = await parse(
        b"a=1&b=two+words&a=3&c=&d=%C3%A9",
        "application/x-www-form-urlencoded; charset=utf-8",
    )
    assert form["a"] == "3"
    assert form.getlist("a") == ["1", "3"]
    assert form["b"] == "two words"
    assert form["c"] == ""
    assert form["d"] == "é"
    assert form.keys() == ["a", "b", "c", "d"]
    assert "a" in form
    assert "z" not in form
    assert form.get("z", "default") == "default"
    with pytest.raises(KeyError):
        form["z"]


async def test_urlencoded_that_is_not_utf8_is_a_400() -> None:
    with pytest.raises(HTTPError) as info:
        await parse(b"a=\xff\xfe", "application/x-www-form-urlencoded")
    assert info.value.status == 400


async def test_urlencoded_with_too_many_fields_is_refused() -> None:
    body = "&".join(f"f{i}=x" for i in range(20)).encode()
    with pytest.raises(HTTPError) as info:
        await parse(body, "application/x-www-form-urlencoded", max_fields=10)
    assert info.value.status in (400, 413)


@pytest.mark.parametrize("split", [0, 1, 7, 64])
async def test_multipart_fields_and_files_in_any_chunking(split: int) -> None:
    body = multipart(
        ("title", None, "Rapport été".encode(), None),
        ("upload", "notes.txt", b"line 1\r\nline 2\r\n--not-a-boundary", "text/plain"),
        ("upload", "data.bin", bytes(range(256)), None),
        ("tag", None, b"a", None),
        ("tag", None, b"b", None),
    )
    form = await parse(body, split=split)
    assert form["title"] == "Rapport été"
    assert form.getlist("tag") == ["a", "b"]
    uploads = form.getlist("upload")
    assert len(uploads) == 2
    notes, data = uploads
    assert isinstance(notes, UploadFile)
    assert isinstance(data, UploadFile)
    assert notes.filename == "notes.txt"
    assert notes.content_type == "text/plain"
    assert notes.size == len(b"line 1\r\nline 2\r\n--not-a-boundary")
    assert await notes.read() == b"line 1\r\nline 2\r\n--not-a-boundary"
    assert data.content_type == "application/octet-stream"
    assert await data.read() == bytes(range(256))
    assert notes.headers["content-disposition"].startswith("form-data")
    assert "notes.txt" in repr(notes)
    await form.close()


async def test_empty_file_and_empty_filename() -> None:
    form = await parse(multipart(("f", "", b"", None)))
    upload = form["f"]
    assert isinstance(upload, UploadFile)
    assert upload.filename == ""
    assert upload.size == 0
    assert await upload.read() == b""
    await form.close()


async def test_large_upload_spills_to_disk_and_reads_back() -> None:
    content = bytes(range(256)) * 8192  # 2 MiB: past the in-memory threshold
    form = await parse(multipart(("big", "big.bin", content, None)), split=65536)
    upload = form["big"]
    assert isinstance(upload, UploadFile)
    assert upload.size == len(content)
    assert not upload._in_memory
    assert await upload.read(10) == content[:10]
    await upload.seek(0)
    assert await upload.read() == content
    await form.close()
    assert upload.file.closed


async def test_too_many_files_is_a_413() -> None:
    body = multipart(*[(f"f{i}", f"{i}.txt", b"x", None) for i in range(3)])
    status, detail = await refused(body, max_files=2)
    assert status == 413
    assert "files" in detail


async def test_too_many_fields_is_a_413() -> None:
    body = multipart(*[(f"f{i}", None, b"x", None) for i in range(3)])
    status, detail = await refused(body, max_fields=2)
    assert status == 413
    assert "fields" in detail


async def test_multipart_without_boundary_is_a_400() -> None:
    with pytest.raises(HTTPError) as info:
        await parse(b"", "multipart/form-data")
    assert info.value.status == 400
    assert "boundary" in info.value.detail


async def test_malformed_multipart_is_a_400() -> None:
    status, _ = await refused(b"this is not multipart at all\r\n\r\n")
    assert status == 400


async def test_truncated_multipart_is_a_400() -> None:
    body = multipart(("f", "a.txt", b"complete content", None))
    status, _ = await refused(body[: len(body) // 2])
    assert status == 400


async def test_truncated_upload_is_a_400_and_its_file_is_closed() -> None:
    body = multipart(("title", None, b"t", None), ("f", "a.txt", b"the whole file", None))
    status, _ = await refused(body[: body.index(b"whole")])
    assert status == 400


async def test_multipart_without_closing_boundary_is_a_400() -> None:
    status, _ = await refused(multipart(("f", None, b"value", None), close=False))
    assert status == 400


@pytest.mark.parametrize(
    "content_type", ["", "text/plain", "application/json", "multipart/mixed; boundary=x"]
)
async def test_other_content_types_are_a_415(content_type: str) -> None:
    with pytest.raises(HTTPError) as info:
        await parse(b"a=1", content_type)
    assert info.value.status == 415
    assert "multipart/form-data" in info.value.detail


async def test_a_malformed_part_after_an_upload_leaves_no_open_file() -> None:
    bad_part = f"--{BOUNDARY}\r\nbad header line\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    body = multipart(("f", "a.txt", b"first file", None), close=False) + bad_part
    status, _ = await refused(body)
    assert status == 400


async def test_form_data_close_closes_every_upload() -> None:
    form = await parse(
        multipart(("a", "a.txt", b"1", None), ("b", "b.txt", b"2", None), ("c", None, b"3", None))
    )
    uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    assert len(uploads) == 2
    await form.close()
    assert all(u.file.closed for u in uploads)


def test_form_data_by_hand() -> None:
    form = FormData([("a", "1"), ("a", "2")])
    assert form["a"] == "2"
    assert form.getlist("a") == ["1", "2"]
    assert form.multi_items() == [("a", "1"), ("a", "2")]
    assert form.keys() == ["a"]
