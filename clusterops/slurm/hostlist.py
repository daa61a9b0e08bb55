"""Slurm host lists, read and written the way Slurm itself reads and writes them.

`expand("gpu[01-03,7]-ib[1-2],login")` gives the names in the order `scontrol show hostnames` prints
them; `compress(names)` gives the exact string `scontrol show hostlist` prints for those names. Both
are checked against the real scontrol of Slurm 22.05 and 24.11 (tests/foundation/test_hostlist.py).

Slurm's rules, as its hostlist code applies them (src/common/hostlist.c), and where we differ:

- Items are separated by ",", " ", tab or newline outside brackets; empty items are skipped.
- A bracket group holds comma-separated numbers and ranges `lo-hi`. The width of every name a range
  makes is the number of digits written for `lo` (`[01-10]` -> 01..10, `[1-010]` -> 1..10, `[008-12]`
  -> 008..012): the digits written for `hi` only give its value.
- Several groups in one name (`gpu[01-03,7]-ib[1-2]`) multiply. With two groups the second varies
  fastest. With three or more Slurm nests them oddly, and we follow it so the orders agree: the last
  group varies fastest, and the others run from the next-to-last (slowest) back to the first, so
  `a[1-2]b[3-4]c[5-6]` starts a1b3c5, a1b3c6, a2b3c5, a2b3c6, a1b4c5.
- Text after the last group (`n[1-3]x`) is accepted by Slurm 24.11 and later and refused by 22.05
  ("Invalid hostlist"). We accept it: the names are unambiguous and current clusters write them.
- Slurm refuses a range of more than 65536 names, and a group that is not the last with more than
  65536 names; so do we. We also refuse a list of more than MAX_NAMES names in all, before making
  any of them, so a typo like `[0-99999]x[0-99999]` cannot eat the machine's memory.
- Malformed input that Slurm half-accepts gets a UsageError here instead: `a[1-3` (22.05 makes the
  one host "a]" of it), `a[1-2]]`, `a[[1-2]`, `a[1-]` (Slurm reads "a1"), spaces or signs inside a
  range, and a reversed range in the first of three or more groups, which Slurm reports and then
  silently drops from the list.

compress follows `scontrol show hostlist` (unsorted): each name splits into the prefix and its
trailing decimal digits (the width is the number of digits written); a name joins the range just
before it when the prefixes match and its number is one more than that range's end, with Slurm's
width rule (`a9,a10` -> `a[9-10]`, `a09,a10` -> `a[09-10]`, `a9,a010` -> `a[9,010]`); consecutive
ranges with the same prefix share one bracket. Nothing is sorted or de-duplicated, so
`expand(compress(names)) == names` always holds. One deliberate difference: a trailing number of
more than 19 digits does not fit Slurm's unsigned long (it prints 18446744073709551615 in its place);
we keep such a name whole.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from clusterops.errors import UsageError

MAX_NAMES = 1_000_000  # one list; a real cluster has at most tens of thousands of nodes
MAX_RANGE = 65536  # Slurm's own limit for one range, and for a group that is not the last (64K hosts)
_MAX_NUMBER_DIGITS = 19  # below 2**64 for sure: what Slurm's unsigned long holds

_SEPARATORS = frozenset(", \t\n")
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?")
_TRAILING_DIGITS = re.compile(r"[0-9]+\Z")


def expand(text: str) -> list[str]:
    """Expand a Slurm host list into names, in Slurm's order, duplicates kept."""
    items = [_parse_item(text, item) for item in _split_items(text)]
    total = 0
    for _, groups in items:
        total += _count(groups)
        if total > MAX_NAMES:
            raise UsageError(f"host list {_show(text)}: more than {MAX_NAMES} names")
    names: list[str] = []
    for literals, groups in items:
        names.extend(_names(literals, groups))
    return names


def compress(names: Iterable[str]) -> str:
    """Write names as Slurm's compressed host list, exactly as `scontrol show hostlist` prints it."""
    ranges: list[_Range] = []
    for name in names:
        hr = _Range.of(name)
        tail = ranges[-1] if ranges else None
        if (
            tail is not None
            and not tail.single
            and not hr.single
            and tail.prefix == hr.prefix
            and tail.hi + 1 == hr.lo
            and _width_equiv(tail, hr)
        ):
            tail.hi = hr.hi
        else:
            ranges.append(hr)
    out: list[str] = []
    i = 0
    while i < len(ranges):
        first = ranges[i]
        j = i + 1
        while j < len(ranges) and _same_bracket(ranges[j - 1], ranges[j]):
            j += 1
        body = ",".join(r.numstr() for r in ranges[i:j])
        if first.single:
            out.append(first.prefix)
        elif j - i > 1 or first.hi > first.lo:
            out.append(f"{first.prefix}[{body}]")
        else:
            out.append(first.prefix + body)
        i = j
    return ",".join(out)


# ----- expand -----


@dataclass(frozen=True)
class _Span:
    lo: int
    hi: int
    width: int


def _split_items(text: str) -> list[str]:
    """Top-level items: separators inside brackets do not split; brackets must pair and not nest."""
    items: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "[":
            if depth:
                raise UsageError(f"host list {_show(text)}: '[' inside a bracket")
            depth = 1
        elif ch == "]":
            if not depth:
                raise UsageError(f"host list {_show(text)}: ']' without '['")
            depth = 0
        elif ch in _SEPARATORS and not depth:
            if cur:
                items.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if depth:
        raise UsageError(f"host list {_show(text)}: '[' without ']'")
    if cur:
        items.append("".join(cur))
    return items


def _parse_item(text: str, item: str) -> tuple[list[str], list[list[_Span]]]:
    """Split `a[1-2]b[3]c` into literals ['a', 'b', 'c'] and parsed groups."""
    parts = re.split(r"\[([^\[\]]*)\]", item)
    literals, groups = parts[0::2], []
    for n, body in enumerate(parts[1::2], start=1):
        spans = [_parse_span(text, part) for part in body.split(",")]
        if n < len(parts) // 2 and sum(s.hi - s.lo + 1 for s in spans) > MAX_RANGE:
            raise UsageError(
                f"host list {_show(text)}: group [{_short(body)}] has more than {MAX_RANGE} names "
                "(Slurm's limit for a group before the last)"
            )
        groups.append(spans)
    return literals, groups


def _parse_span(text: str, part: str) -> _Span:
    m = _RANGE.fullmatch(part)
    if not m:
        raise UsageError(f"host list {_show(text)}: bad range {_short(part)!r} (want N or N-M, digits only)")
    lo_text, hi_text = m.groups()
    lo = int(lo_text)
    hi = int(hi_text) if hi_text is not None else lo
    if lo > hi:
        raise UsageError(f"host list {_show(text)}: bad range {part!r}: reversed ({lo} > {hi})")
    if hi - lo + 1 > MAX_RANGE:
        raise UsageError(
            f"host list {_show(text)}: range {part!r} has {hi - lo + 1} names (Slurm allows {MAX_RANGE})"
        )
    return _Span(lo, hi, len(lo_text))


def _count(groups: list[list[_Span]]) -> int:
    total = 1
    for spans in groups:
        total *= sum(s.hi - s.lo + 1 for s in spans)
    return total


def _numbers(spans: list[_Span]) -> list[str]:
    return [f"{i:0{s.width}d}" for s in spans for i in range(s.lo, s.hi + 1)]


def _names(literals: list[str], groups: list[list[_Span]]) -> list[str]:
    if not groups:
        return [literals[0]]
    values = [_numbers(spans) for spans in groups]
    # Slurm's nesting (see the module docstring): groups n-1 .. 1 from slowest to fastest, group n last.
    order = [*range(len(groups) - 2, -1, -1), len(groups) - 1]
    names = []
    for combo in itertools.product(*(values[k] for k in order)):
        picked = dict(zip(order, combo, strict=True))
        parts = [literals[0]]
        for k in range(len(groups)):
            parts.append(picked[k])
            parts.append(literals[k + 1])
        names.append("".join(parts))
    return names


# ----- compress -----


@dataclass
class _Range:
    """Slurm's hostrange: prefix + numbers lo..hi written with `width` digits, or one name whole."""

    prefix: str
    lo: int = 0
    hi: int = 0
    width: int = 0
    single: bool = False

    @classmethod
    def of(cls, name: str) -> _Range:
        if not name or any(ch in _SEPARATORS or ch in "[]" for ch in name):
            raise UsageError(f"host name {_short(name)!r}: empty, or has a separator or bracket in it")
        m = _TRAILING_DIGITS.search(name)
        if m is None or len(m.group()) > _MAX_NUMBER_DIGITS:
            return cls(prefix=name, single=True)
        digits = m.group()
        return cls(prefix=name[: m.start()], lo=int(digits), hi=int(digits), width=len(digits))

    def numstr(self) -> str:
        lo = f"{self.lo:0{self.width}d}"
        return lo if self.hi == self.lo else f"{lo}-{self.hi:0{self.width}d}"


def _same_bracket(a: _Range, b: _Range) -> bool:
    return not a.single and not b.single and a.prefix == b.prefix


def _zero_padded(num: int, width: int) -> int:
    return max(width - len(str(num)), 0)


def _width_equiv(a: _Range, b: _Range) -> bool:
    """Slurm's _width_equiv on the ranges' first numbers: may two widths share one range? When they
    may, the width that changes neither number's zero padding is adopted by the other, as Slurm does
    (which is why `a9,a10` is `a[9-10]`, and `a9,a010` stays two entries)."""
    if a.width == b.width:
        return True
    a_own, a_other = _zero_padded(a.lo, a.width), _zero_padded(a.lo, b.width)
    b_own, b_other = _zero_padded(b.lo, b.width), _zero_padded(b.lo, a.width)
    if a_own != a_other and b_own != b_other:
        return False
    if a_own != a_other:
        b.width = a.width
    else:
        a.width = b.width
    return True


def _short(s: str, limit: int = 60) -> str:
    return s if len(s) <= limit else s[:limit] + "..."


def _show(text: str) -> str:
    return repr(_short(text, 120))
