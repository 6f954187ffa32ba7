"""Finding one field in a form body without parsing (or keeping) the rest."""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from python_multipart.multipart import MultipartParser
from python_multipart.multipart import parse_options_header as _parse_options_header

__all__ = ["MultipartField", "parse_options_header", "urlencoded_field"]

_MAX_FIELD = 4096  # a token is far shorter; a longer value is not one


def parse_options_header(value: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """`multipart/form-data; boundary=x` -> (b"multipart/form-data", {b"boundary": b"x"})."""
    try:
        media_type, options = _parse_options_header(value)
    except ValueError:
        return b"", {}
    return media_type.lower(), options


def urlencoded_field(body: bytes, field: bytes) -> bytes | None:
    """The first value of `field` in an `application/x-www-form-urlencoded` body."""
    for pair in body.split(b"&"):
        name, _, value = pair.partition(b"=")
        if unquote_to_bytes(name.replace(b"+", b" ")) == field:
            return unquote_to_bytes(value.replace(b"+", b" "))
    return None


class MultipartField:
    """Feed a `multipart/form-data` body in chunks; `value` is the named field once `done`.

    Raises ValueError (from the parser) on a malformed body. File parts are skipped.
    """

    def __init__(self, boundary: bytes, field: bytes) -> None:
        self.field = field
        self.value: bytes | None = None
        self.done = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._is_target = False
        self._data = bytearray()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value_data,
                "on_header_end": self._header_end,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def write(self, chunk: bytes) -> None:
        if not self.done and chunk:
            self._parser.write(chunk)

    def _part_begin(self) -> None:
        self._is_target = False
        self._data.clear()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            _, options = parse_options_header(bytes(self._header_value))
            self._is_target = options.get(b"name") == self.field and b"filename" not in options
        self._header_name.clear()
        self._header_value.clear()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_target:
            self._data += data[start:end]
            if len(self._data) > _MAX_FIELD:
                self._is_target = False
                self._data.clear()

    def _part_end(self) -> None:
        if self._is_target and not self.done:
            self.value = bytes(self._data)
            self.done = True
