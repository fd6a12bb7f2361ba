"""Stored payloads are packed on the way into Redis and expanded exactly on the way out."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher import compact
from dispatcher.events import model_for
from workers import demo

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, derandomize=True)
@given(platform=st.sampled_from(sorted(compact.TOKENS)), value=JSON_VALUES)
def test_any_json_text_expands_to_exactly_what_was_packed(platform: str, value: object) -> None:
    # Given any JSON text (control characters in strings come out escaped)
    text = json.dumps(value).encode()
    # When it is packed for a platform and expanded, alone or in a batch
    stored = compact.pack(platform, text)
    # Then it comes back byte for byte, both ways
    assert compact.expand(stored) == text
    assert compact.expand_all(platform, [stored, stored]) == [text, text]
    # and packing many at once is packing each
    assert compact.pack_all(platform, [text] * 3) == [stored] * 3


def test_a_linkedin_event_is_stored_in_well_under_half_its_size_with_its_values_kept() -> None:
    # Given LinkedIn events as the model writes them
    model = model_for("linkedin")
    payloads = [model.model_validate(e).to_payload()[1] for e in demo.linkedin_events(50)]
    # When they are packed
    stored = [compact.pack("linkedin", p) for p in payloads]
    # Then they shrink below 40 %, and every value (the hashed email too) is still readable
    assert sum(map(len, stored)) < 0.4 * sum(map(len, payloads))
    digest = json.loads(payloads[0])["user"]["userIds"][0]["idValue"]
    assert digest.encode() in stored[0]
    assert compact.expand_all("linkedin", stored) == payloads


def test_a_payload_never_packed_expands_to_itself() -> None:
    # Given a payload written before packing existed
    old = b'{"conversion":"urn:lla:llaPartnerConversion:1","eventId":"x"}'
    # Then expanding it changes nothing
    assert compact.expand(old) == old
    assert compact.expand_all("linkedin", [old]) == [old]


def test_text_that_is_not_json_is_refused_rather_than_stored_ambiguously() -> None:
    with pytest.raises(ValueError, match="raw control character"):
        compact.pack("linkedin", b'{"a":"\x01"}')


def test_packing_many_is_packing_each_and_refuses_raw_control_bytes() -> None:
    model = model_for("linkedin")
    payloads = [model.model_validate(e).to_payload()[1] for e in demo.linkedin_events(300)]
    assert compact.pack_all("linkedin", payloads) == [compact.pack("linkedin", p) for p in payloads]
    assert compact.pack_all("linkedin", []) == []
    for raw in (b'{"a":"x\x01"}', b'{"a":"x\x00"}'):
        with pytest.raises(ValueError, match="raw"):
            compact.pack_all("linkedin", [*payloads[:200], raw])
