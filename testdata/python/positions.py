"""The truth for flamebpf's line-table decoders and frame offsets, from the
interpreter that runs this (symbolizer/src/python/lines.rs's tests).

Usage: positions.py FRAME_INSTR CODE_ADAPTIVE CODE_LINETABLE

First line: `offsets ok`, or `offsets wrong: WHY`, after checking with ctypes
that a live frame's instruction field (FRAME_INSTR: 3.10's f_lasti in the frame
object, else prev_instr / instr_ptr in the _PyInterpreterFrame), the code
object's bytecode (CODE_ADAPTIVE, 3.11+), its co_linetable pointer
(CODE_LINETABLE) and that bytes object's length and bytes lie where flamebpf
reads them, and that the instruction index
read so gives the frame's f_lasti.

Then one line per code object of a few standard modules and of the sources
below: `code FIRSTLINENO LINETABLE_HEX LINES`, LINES being the line of each code
unit (`-` where it has none) as co_lines() says, comma-separated."""
import ctypes
import sys

FRAME_INSTR, CODE_ADAPTIVE, CODE_LINETABLE = (int(a) for a in sys.argv[1:4])
V = sys.version_info[:2]


def word(addr):
    return ctypes.c_uint64.from_address(addr).value


def probe():
    """Checks the offsets on the caller's frame, suspended at its call here."""
    f = sys._getframe(1)
    code = f.f_code
    table = code.co_linetable
    if word(id(code) + CODE_LINETABLE) != id(table):
        return "co_linetable is not at %d" % CODE_LINETABLE
    # PyBytesObject: ob_size at 16, the bytes at 32
    if word(id(table) + 16) != len(table) or ctypes.string_at(id(table) + 32, len(table)) != table:
        return "co_linetable's bytes are not at 32"
    if V == (3, 10):
        index = ctypes.c_int32.from_address(id(f) + FRAME_INSTR).value
    else:
        adaptive = code._co_code_adaptive
        if ctypes.string_at(id(code) + CODE_ADAPTIVE, len(adaptive)) != adaptive:
            return "co_code_adaptive is not at %d" % CODE_ADAPTIVE
        # PyFrameObject.f_frame, the _PyInterpreterFrame
        iframe = word(id(f) + 24)
        instr = word(iframe + FRAME_INSTR)
        index = (instr - (id(code) + CODE_ADAPTIVE)) // 2
    if index * 2 != f.f_lasti:
        return "instruction index %d, f_lasti %d" % (index, f.f_lasti)
    return None


def caller():
    why = probe()
    return why


def lines_of(code):
    units = len(code.co_code) // 2
    out = ["-"] * units
    for start, end, line in code.co_lines():
        for i in range(start // 2, min(end // 2, units)):
            out[i] = "-" if line is None else str(line)
    return out


def walk(code):
    yield code
    for c in code.co_consts:
        if hasattr(c, "co_lines"):
            yield from walk(c)


# Lines far apart and going back, long lines, wide columns, no-line code.
TRICKY = (
    "def far():\n"
    + "    a = 1\n"
    + "\n" * 300
    + "    b = (a +\n" + "\n" * 200 + "         2)\n"
    + "    return [x for x in range(3)\n            if x]\n"
    + "def wide():\n"
    + "    return " + " + ".join("v%d" % i for i in range(400)) + "\n"
    + "def loops(n):\n"
    + "    t = 0\n"
    + "    for i in range(n):\n"
    + "        try:\n"
    + "            t += i\n"
    + "        finally:\n"
    + "            t -= 1\n"
    + "    while t:\n"
    + "        t -= 1\n"
    + "    with open(__file__) as f:\n"
    + "        pass\n"
    + "    return t\n"
)


def main():
    why = caller()
    print("offsets ok" if why is None else "offsets wrong: " + why)
    import argparse
    import dataclasses
    import json.decoder

    sources = [(TRICKY, "<tricky>")]
    for m in (argparse, dataclasses, json.decoder):
        with open(m.__file__) as f:
            sources.append((f.read(), m.__file__))
    for text, name in sources:
        for code in walk(compile(text, name, "exec")):
            print(
                "code",
                code.co_firstlineno,
                code.co_linetable.hex() or "-",
                ",".join(lines_of(code)),
            )


main()
