"""Values kept within what an Azure Table property holds (64 KiB of UTF-16: 32K code units)."""

import json

from sync_core.table_limits import MARKER, STRING_UNITS, clip, json_prefix, utf16_units


def test_utf16_units_count_characters_beyond_the_bmp_twice() -> None:
    assert utf16_units("abc") == 3
    assert utf16_units("é") == 1
    assert utf16_units("🎻") == 2
    assert STRING_UNITS == 32768


def test_clip_keeps_what_fits_and_marks_the_cut() -> None:
    assert clip("short", 10) == "short"
    cut = clip("x" * 40_000, 1000)
    assert cut.endswith(MARKER) and utf16_units(cut) <= 1000 and cut.startswith("x" * 900)
    violins = clip("🎻" * 1000, 101)  # never splits a surrogate pair
    assert utf16_units(violins) <= 101 and violins.endswith(MARKER)
    assert (violins[: -len(MARKER)].encode("utf-16-le").decode("utf-16-le")) == violins[: -len(MARKER)]


def test_json_prefix_keeps_the_longest_prefix_that_fits() -> None:
    recipients = [f"parent{i:04d}@home.example" for i in range(3000)]
    text, kept = json_prefix(recipients, 16_384)
    assert utf16_units(text) <= 16_384 < utf16_units(json.dumps(recipients[: kept + 1]))
    assert json.loads(text) == recipients[:kept]
    assert json_prefix(recipients[:3], 16_384) == (json.dumps(recipients[:3]), 3)
    assert json_prefix(recipients, 1) == ("[]", 0)
