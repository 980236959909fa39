"""Encoding records for durable backends: msgspec JSON (portable) or msgpack (faster).

``json`` (the default) writes UTF-8 JSON that any language can read back: the
state must be JSON-native (msgspec also encodes structs, dataclasses,
datetimes, UUIDs, enums ... as JSON values). ``msgpack`` writes the same tree
as MessagePack: smaller and faster to encode/decode, still schema-free and
class-independent, so migrations work on both. Decoding gives a
:class:`CheckpointRecord` whose states are plain builtins.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from .errors import CheckpointRecordInvalid
from .records import CheckpointRecord

__all__ = ["Codec", "Encoding"]

Encoding = Literal["json", "msgpack"]


class Codec:
    """Encoder/decoder pair for one :data:`Encoding`."""

    __slots__ = ("_dec", "_enc", "encoding")

    def __init__(self, encoding: Encoding = "json") -> None:
        if encoding == "json":
            self._enc: msgspec.json.Encoder | msgspec.msgpack.Encoder = msgspec.json.Encoder()
            self._dec: msgspec.json.Decoder[CheckpointRecord] | msgspec.msgpack.Decoder[
                CheckpointRecord
            ] = msgspec.json.Decoder(CheckpointRecord)
        elif encoding == "msgpack":
            self._enc = msgspec.msgpack.Encoder()
            self._dec = msgspec.msgpack.Decoder(CheckpointRecord)
        else:
            raise ValueError(f"encoding must be 'json' or 'msgpack', got {encoding!r}")
        self.encoding = encoding

    def encode(self, record: CheckpointRecord) -> bytes:
        """``record`` as bytes; a state the encoding cannot represent raises ``TypeError``."""
        return self._enc.encode(record)

    def decode(self, data: bytes, invocation_id: str) -> CheckpointRecord:
        """Bytes back to a record; corrupt bytes raise ``checkpoint_record_invalid``."""
        try:
            return self._dec.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CheckpointRecordInvalid(
                f"the stored checkpoint record of invocation {invocation_id!r} cannot be "
                f"decoded ({self.encoding}): {exc}"
            ) from exc
