"""Protobuf's wire format read by hand (no protobuf package).

field_spans() gives where each field's value lies (to patch a message in
place); fields() gives the values themselves.
"""


def varint(buf, pos):
    """The base-128 varint at buf[pos]: (value, position after it)."""
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def field_spans(buf, start=0, end=None):
    """(number, wire type, value start, value end) of each field of the
    message buf[start:end]; a varint's span is its encoded bytes."""
    pos = start
    end = len(buf) if end is None else end
    while pos < end:
        key, pos = varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, nxt = varint(buf, pos)
        elif wire == 1:
            nxt = pos + 8
        elif wire == 2:
            n, pos = varint(buf, pos)
            nxt = pos + n
        elif wire == 5:
            nxt = pos + 4
        else:
            raise ValueError("unsupported protobuf wire type %d" % wire)
        yield number, wire, pos, nxt
        pos = nxt


def fields(buf):
    """(number, wire type, value) of each field of the message `buf`: an int
    for a varint, the bytes otherwise (fixed32/fixed64 undecoded)."""
    for number, wire, s, e in field_spans(buf):
        yield number, wire, (varint(buf, s)[0] if wire == 0 else buf[s:e])
