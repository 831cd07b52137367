"""Bytebeat: one-line C-style formulas over the sample index t, as a tiny synthetic corpus.

A formula such as `t*(t>>5|t>>8)` is parsed into an expression tree (never `eval`): integers,
`t`, unary `- + ~`, binary `* / % + - << >> < > <= >= == != & ^ |` and `?:`, with C's
precedence. It is evaluated over a whole vector of t at once in 32-bit two's-complement
arithmetic (C's `int` on every machine that plays bytebeat), and the low 8 bits of the
result are the unsigned 8-bit sample, at 8 kHz.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from datasets.io import atomic_path

SAMPLE_RATE = 8000
MAX_FORMULA_CHARS = 2000
MAX_DEPTH = 40  # parentheses and unary operators nested; keeps the parser's recursion shallow
MAX_TREE_DEPTH = 200  # the evaluator recurses once per tree level

# A few classics from viznut's 2011 posts ("Algorithmic symphonies from one line of code").
BUILTIN_FORMULAS: tuple[str, ...] = (
    "t*(t>>5|t>>8)",
    "t*(((t>>12)|(t>>8))&(63&(t>>4)))",
    "(t*(t>>5|t>>8))>>(t>>16)",
    "t*((t>>9|t>>13)&25&t>>6)",
    "(t>>6|t|t>>(t>>16))*10+((t>>11)&7)",
    "t*(t>>11&t>>8&123&t>>3)",
    "(t*5&t>>7)|(t*3&t>>10)",
    "((t>>10)&42)*t",
    "t*(t>>8*(t>>15|t>>8)&(20|(t>>19)*5>>t|t>>3))",
    "(t&t>>8)*(t>>4|t>>8)",
)

_TOKEN = re.compile(
    r"\s*(?:(0[xX][0-9a-fA-F]+|[0-9]+)|(t)\b|(<<|>>|<=|>=|==|!=|[-+*/%&|^~<>?:()]))"
)
# Binary operators by precedence level, loosest first (C's table, without && || and ,).
_LEVELS: tuple[tuple[str, ...], ...] = (
    ("|",),
    ("^",),
    ("&",),
    ("==", "!="),
    ("<", ">", "<=", ">="),
    ("<<", ">>"),
    ("+", "-"),
    ("*", "/", "%"),
)


class BytebeatError(ValueError):
    """A formula outside the accepted grammar; the message says where and why."""


@dataclass(frozen=True)
class Num:
    value: int


@dataclass(frozen=True)
class T:
    pass


@dataclass(frozen=True)
class Unary:
    op: str
    operand: Node


@dataclass(frozen=True)
class Binary:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Conditional:
    test: Node
    then: Node
    otherwise: Node


Node = Num | T | Unary | Binary | Conditional


def _tokenize(formula: str) -> list[tuple[str, int]]:
    """(token, column) pairs; anything that is not a token of the grammar is refused."""
    tokens = []
    position = 0
    text = formula.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            column = position + len(text[position:]) - len(text[position:].lstrip())
            raise BytebeatError(
                f"unexpected {text[column]!r} at column {column + 1} in {formula!r}; "
                "allowed: integers, t, + - * / % & | ^ << >> ~ < > <= >= == != ?: ( )"
            )
        token = match.group(match.lastindex)
        tokens.append((token, match.start(match.lastindex)))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, formula: str) -> None:
        self.formula = formula
        self.tokens = _tokenize(formula)
        self.index = 0
        self.depth = 0

    def peek(self) -> str | None:
        return self.tokens[self.index][0] if self.index < len(self.tokens) else None

    def error(self, message: str) -> BytebeatError:
        if self.index < len(self.tokens):
            token, column = self.tokens[self.index]
            where = f"{token!r} at column {column + 1}"
        else:
            where = "the end"
        return BytebeatError(f"{message}: {where} in {self.formula!r}")

    def take(self, expected: str) -> None:
        if self.peek() != expected:
            raise self.error(f"expected {expected!r}")
        self.index += 1

    def parse(self) -> Node:
        if not self.tokens:
            raise BytebeatError("empty formula")
        node = self.conditional()
        if self.peek() is not None:
            raise self.error("unexpected token")
        return node

    def conditional(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"nested deeper than {MAX_DEPTH}")
        test = self.binary(0)
        if self.peek() == "?":
            self.index += 1
            then = self.conditional()
            self.take(":")
            test = Conditional(test, then, self.conditional())
        self.depth -= 1
        return test

    def binary(self, level: int) -> Node:
        if level == len(_LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while self.peek() in _LEVELS[level]:
            op = self.tokens[self.index][0]
            self.index += 1
            node = Binary(op, node, self.binary(level + 1))
        return node

    def unary(self) -> Node:
        token = self.peek()
        if token in ("-", "+", "~"):
            self.index += 1
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.error(f"nested deeper than {MAX_DEPTH}")
            node = Unary(token, self.unary())
            self.depth -= 1
            return node
        if token == "(":
            self.index += 1
            node = self.conditional()
            self.take(")")
            return node
        if token == "t":
            self.index += 1
            return T()
        if token is not None and token[0].isdigit():
            self.index += 1
            value = int(token, 0) if token.lower().startswith("0x") else int(token)
            # C's int literal wraps to 32 bits; wrapping here keeps huge literals out of int64.
            return Num(((value + (1 << 31)) & 0xFFFFFFFF) - (1 << 31))
        raise self.error("expected a number, t, a unary operator or '('")


def parse(formula: str) -> Node:
    """The expression tree of `formula`; raises `BytebeatError` for anything outside it."""
    if len(formula) > MAX_FORMULA_CHARS:
        raise BytebeatError(f"formula longer than {MAX_FORMULA_CHARS} characters")
    tree = _Parser(formula).parse()
    if _tree_depth(tree) > MAX_TREE_DEPTH:
        raise BytebeatError(f"expression tree deeper than {MAX_TREE_DEPTH} in {formula!r}")
    return tree


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Conditional):
        return (node.test, node.then, node.otherwise)
    return ()


def _tree_depth(tree: Node) -> int:
    """Depth of the tree, without recursion (a long `t+t+...+t` chain is a deep tree)."""
    deepest = 0
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in _children(node))
    return deepest


def _wrap(x: np.ndarray) -> np.ndarray:
    """Two's-complement 32-bit wrap-around of int64 values."""
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def _divide(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C's truncating division and remainder; dividing by zero gives 0 (no trap on a stream)."""
    safe = np.where(b == 0, 1, b)
    quotient = np.abs(a) // np.abs(safe) * np.sign(a) * np.sign(safe)
    remainder = a - quotient * safe
    zero = b == 0
    return np.where(zero, 0, quotient), np.where(zero, 0, remainder)


_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: _divide(a, b)[0],
    "%": lambda a, b: _divide(a, b)[1],
    "&": lambda a, b: a & b,
    "|": lambda a, b: a | b,
    "^": lambda a, b: a ^ b,
    "<<": lambda a, b: a << (b & 31),
    ">>": lambda a, b: a >> (b & 31),
    "<": lambda a, b: (a < b).astype(np.int64),
    ">": lambda a, b: (a > b).astype(np.int64),
    "<=": lambda a, b: (a <= b).astype(np.int64),
    ">=": lambda a, b: (a >= b).astype(np.int64),
    "==": lambda a, b: (a == b).astype(np.int64),
    "!=": lambda a, b: (a != b).astype(np.int64),
}


def evaluate(node: Node, t: np.ndarray) -> np.ndarray:
    """The formula's int32 values (held as int64) at every t."""
    if isinstance(node, Num):
        return np.full(t.shape, _wrap(np.int64(node.value)), dtype=np.int64)
    if isinstance(node, T):
        return _wrap(t.astype(np.int64))
    if isinstance(node, Unary):
        value = evaluate(node.operand, t)
        return _wrap({"-": -value, "+": value, "~": ~value}[node.op])
    if isinstance(node, Binary):
        return _wrap(_BINARY[node.op](evaluate(node.left, t), evaluate(node.right, t)))
    test = evaluate(node.test, t)
    return np.where(test != 0, evaluate(node.then, t), evaluate(node.otherwise, t))


def bytebeat(formula: str, seconds: float, block: int = 1 << 16) -> np.ndarray:
    """`seconds` of the formula at 8 kHz as unsigned 8-bit samples (the value's low byte)."""
    tree = parse(formula)
    n = round(seconds * SAMPLE_RATE)
    out = np.empty(n, dtype=np.uint8)
    for start in range(0, n, block):
        t = np.arange(start, min(n, start + block), dtype=np.int64)
        out[start : start + len(t)] = (evaluate(tree, t) & 0xFF).astype(np.uint8)
    return out


def to_float(samples: np.ndarray) -> np.ndarray:
    """Unsigned 8-bit samples as float32 in [-1, 1): (s - 128) / 128."""
    return (samples.astype(np.float32) - 128.0) / 128.0


def read_formulas(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """(label, formula) per non-blank line of a text file; `#` starts a comment line."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [
        (f"{Path(path).name}:{number}", line.strip())
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.strip().startswith("#")
    ]


def render_formulas(
    formulas: Sequence[tuple[str, str]], out_dir: str | os.PathLike[str], seconds: float
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Write each formula as an 8-bit 8 kHz WAV named by its content (kept if already there).

    Returns the WAV paths and (label, reason) for every formula that was refused.
    """
    out_dir = Path(out_dir)
    paths: list[Path] = []
    refused: list[tuple[str, str]] = []
    for index, (label, formula) in enumerate(formulas):
        digest = hashlib.sha256(f"{formula}\0{seconds}".encode()).hexdigest()[:12]
        target = out_dir / f"{index:04d}-{digest}.wav"
        if not target.exists():
            try:
                samples = bytebeat(formula, seconds)
            except BytebeatError as exc:
                refused.append((label, str(exc)))
                continue
            with atomic_path(target) as tmp:
                sf.write(str(tmp), to_float(samples), SAMPLE_RATE, "PCM_U8", format="WAV")
        paths.append(target)
    return paths, refused
