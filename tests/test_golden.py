"""Generated output matches the committed golden files (regenerate with `make golden`)."""

from __future__ import annotations

from tests.golden import GOLDEN, generate


def test_generated_output_matches_the_golden_files() -> None:
    expected = {p.relative_to(GOLDEN).as_posix(): p.read_bytes() for p in GOLDEN.rglob("*") if p.is_file()}
    actual = generate()
    assert sorted(actual) == sorted(expected), "files differ: run `make golden` and review the diff"
    for rel, data in actual.items():
        assert data == expected[rel], f"{rel} differs from its golden file: run `make golden` and review the diff"
