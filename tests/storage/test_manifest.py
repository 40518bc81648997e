"""The typed records: round trips, unknown fields kept, format versions checked."""

from __future__ import annotations

import json

import pytest

from awaitly_nb import StateFormatError
from awaitly_nb.storage.manifest import (
    MANIFEST_FORMAT,
    RECORD_FORMAT,
    BlobRef,
    StepManifest,
    ValueRecord,
)


def test_a_manifest_round_trips_through_its_stored_dict_and_json() -> None:
    manifest = StepManifest(
        "nb.ipynb",
        "clean",
        kind="block",
        fingerprint="f" * 32,
        code="c" * 32,
        inputs={"raw": "load@1.000000"},
        variables=("clean",),
        types={"clean": "list"},
        nbytes={"clean": 88},
        duration_ms=12.5,
        saved_at=1_700_000_000.25,
        size=345,
        versions={"python": "3.11.7"},
        extra={"note": "kept"},
    )
    stored = json.loads(json.dumps(manifest.to_dict()))
    assert stored["format"] == MANIFEST_FORMAT and stored["note"] == "kept"
    back = StepManifest.from_dict(stored)
    assert back == manifest and back.extra == {"note": "kept"}


def test_a_partial_manifest_gets_defaults_and_keeps_unknown_fields() -> None:
    back = StepManifest.from_dict({"workflow": "w", "key": "k", "n": 1, "variables": "bad"})
    assert (back.kind, back.variables, back.saved_at, back.extra) == ("cell", (), 0.0, {"n": 1})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"workflow": "w", "key": "k", "format": 2}, "manifest format 2; this awaitly_nb reads"),
        ({"workflow": "w"}, "no workflow or key"),
        ([1, 2], "a list, not a dict"),
    ],
)
def test_a_manifest_of_another_format_or_shape_is_refused(data: object, message: str) -> None:
    with pytest.raises(StateFormatError, match=message):
        StepManifest.from_dict(data)


def test_a_value_record_round_trips_as_a_dict_and_as_json() -> None:
    inline = ValueRecord("x" * 32, (BlobRef("a" * 32, 10),), stream=b"\x80\x05.", nbytes=13)
    assert ValueRecord.from_dict(inline.to_dict()) == inline
    assert ValueRecord.from_json(json.loads(json.dumps(inline.to_json())), "here") == inline
    blob = ValueRecord("x" * 32, stream_ref=BlobRef("b" * 32, 20_000), nbytes=20_000)
    assert ValueRecord.from_json(json.loads(json.dumps(blob.to_json())), "here") == blob
    assert blob.blobs() == [BlobRef("b" * 32, 20_000)]
    assert inline.to_dict()["format"] == RECORD_FORMAT


def test_a_json_record_whose_inline_stream_was_changed_is_refused() -> None:
    data = ValueRecord("x" * 32, stream=b"\x80\x05K\x01.").to_json()
    data["stream_b64"] = "gAVLAi4="  # another pickle, same length
    with pytest.raises(StateFormatError, match="does not match its checksum"):
        ValueRecord.from_json(data, "shared step 'k'")
