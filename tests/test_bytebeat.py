"""Bytebeat formulas: C semantics in 32 bits, and nothing outside the grammar gets through."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from datasets.audio.bytebeat import (
    BUILTIN_FORMULAS,
    SAMPLE_RATE,
    BytebeatError,
    Num,
    bytebeat,
    evaluate,
    parse,
    read_formulas,
    render_formulas,
    to_float,
)

T = np.arange(0, 70000, 7, dtype=np.int64)


def c_int32(values: np.ndarray) -> np.ndarray:
    return values.astype(np.int64).astype(np.uint32).astype(np.int32).astype(np.int64)


def test_the_classic_matches_a_direct_computation() -> None:
    t = np.arange(70000, dtype=np.int64)
    out = bytebeat("t*(t>>5|t>>8)", 70000 / SAMPLE_RATE)
    assert np.array_equal(out, ((t * ((t >> 5) | (t >> 8))) & 0xFF).astype(np.uint8))


@pytest.mark.parametrize(
    ("formula", "expected"),
    [
        ("1+2*3", 7),
        ("(1+2)*3", 9),
        ("1<<2+1", 8),  # + binds tighter than <<
        ("6&3|8", 10),  # & before |
        ("5^1&3", 4),  # & before ^
        ("1<2==1", 1),  # < before ==
        ("-7/2", -3),  # C truncates toward zero
        ("-7%2", -1),  # the remainder takes the dividend's sign
        ("7/0", 0),  # division by zero is 0, not a crash
        ("7%0", 0),
        ("~0", -1),
        ("0x7fffffff+1", -(2**31)),  # 32-bit wrap-around
        ("1<<31", -(2**31)),
        ("1<<33", 2),  # shift counts are taken mod 32
        ("-8>>1", -4),  # arithmetic right shift
        ("0?1:2", 2),
        ("1?0?3:4:5", 4),  # ?: is right-associative
        ("3>2?10:20", 10),
    ],
)
def test_c_semantics(formula: str, expected: int) -> None:
    assert evaluate(parse(formula), np.zeros(1, dtype=np.int64))[0] == expected


def test_overflowing_products_wrap_like_c() -> None:
    got = evaluate(parse("t*t*t"), T)
    assert np.array_equal(got, c_int32(c_int32(T * T) * T))


@pytest.mark.parametrize(
    ("formula", "reason"),
    [
        ("", "empty"),
        ("__import__('os').system('x')", "unexpected '_'"),
        ("t**2", "expected a number"),
        ("t&&1", "expected a number"),
        ("t(1)", "unexpected token"),
        ("sin(t)", "unexpected 's'"),
        ("t?1", "expected ':'"),
        ("(t", "expected '\\)'"),
        ("t;t", "unexpected ';'"),
        ("1.5*t", "unexpected"),
        ("(" * 60 + "t" + ")" * 60, "nested deeper"),
        ("+".join(["t"] * 400), "tree deeper"),
        ("t" * 3000, "longer than"),
    ],
)
def test_anything_else_is_refused(formula: str, reason: str) -> None:
    with pytest.raises(BytebeatError, match=reason):
        parse(formula)


def test_builtins_parse_and_sound() -> None:
    for formula in BUILTIN_FORMULAS:
        samples = bytebeat(formula, 2.0)
        assert samples.dtype == np.uint8
        assert len(samples) == 2 * SAMPLE_RATE
        assert len(np.unique(samples)) > 8, formula


def test_render_formulas_writes_8bit_wavs_and_reports_refusals(tmp_path: Path) -> None:
    text = tmp_path / "f.txt"
    text.write_text("# a comment\nt*(t>>5|t>>8)\n\nt*import\n(t>>4)&t\n")
    formulas = read_formulas(text)
    assert [label for label, _ in formulas] == ["f.txt:2", "f.txt:4", "f.txt:5"]
    paths, refused = render_formulas(formulas, tmp_path / "out", seconds=0.5)
    assert len(paths) == 2
    assert refused[0][0] == "f.txt:4"
    assert "unexpected 'i'" in refused[0][1]
    info = sf.info(str(paths[0]))
    assert (info.samplerate, info.subtype, info.frames) == (SAMPLE_RATE, "PCM_U8", 4000)
    decoded = sf.read(str(paths[0]), dtype="float32")[0]
    np.testing.assert_array_equal(decoded, to_float(bytebeat("t*(t>>5|t>>8)", 0.5)))
    again, _ = render_formulas(formulas, tmp_path / "out", seconds=0.5)
    assert again == paths


def test_huge_literals_wrap_to_32_bits_like_c() -> None:
    assert bytebeat("9223372036854775808", 0.001).dtype == np.uint8
    assert parse("4294967297") == parse("1")
    assert parse("2147483648") == parse("0x80000000") == Num(-(2**31))
