"""The fast YAML writer reads back to the same data, for any plain data."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from slm_deploy.yamlout import dump

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=30),
    st.sampled_from(
        [
            "yes",
            "No",
            "on",
            "null",
            "~",
            "0:0",
            "10001:10001",
            "1e3",
            "0x1F",
            "-",
            "a: b",
            "#x",
            "line\nnext\n",
            "  lead\nx",
            "x\n\n",
            "*ref",
            "&a",
            "!tag",
            "@at",
            "`tick",
            "%p",
            "2048m",
        ]
    ),
)
keys = st.one_of(st.text(min_size=1, max_size=12), st.sampled_from(["on", "yes", "a b", "1", "x:"]))
data = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, data, max_size=5))
def test_dump_round_trips(value: dict[str, Any]) -> None:
    assert yaml.safe_load(dump(value)) == (value or None)
