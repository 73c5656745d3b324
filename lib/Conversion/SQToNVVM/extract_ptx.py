#!/usr/bin/env python3
"""Prints the PTX embedded by --gpu-module-to-binary=format=isa: the
`assembly = "..."` string of the gpu.binary in an MLIR file (MLIR string
escapes decoded: \\XX hex, \\\\, \\", \\n, \\t)."""
import re
import sys

text = open(sys.argv[1]).read()
m = re.search(r'assembly = "((?:[^"\\]|\\.)*)"', text)
if not m:
    sys.exit("extract_ptx.py: no gpu.binary assembly in " + sys.argv[1])
s, out, i = m.group(1), bytearray(), 0
while i < len(s):
    if s[i] != "\\":
        out += s[i].encode()
        i += 1
    elif s[i + 1] in '\\"':
        out.append(ord(s[i + 1]))
        i += 2
    elif s[i + 1] == "n":
        out.append(10)
        i += 2
    elif s[i + 1] == "t":
        out.append(9)
        i += 2
    else:
        out.append(int(s[i + 1:i + 3], 16))
        i += 3
sys.stdout.buffer.write(bytes(out).rstrip(b"\0"))
