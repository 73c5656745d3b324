"""Writes broken Hugging Face checkpoint folders from a good one.

    make_bad_hf.py GOOD OUT KIND [ARG]

copies the folder GOOD to OUT and breaks it as KIND says (plain Python, no
numpy; the safetensors headers are rewritten in place, the data is kept):

  config-drop FIELD          config.json without FIELD
  config-set FIELD JSON...   config.json with FIELD = JSON (pairs)
  config-text TEXT           config.json replaced by TEXT
  no-config                  config.json removed
  no-weights                 model.safetensors (and shards, index) removed
  st-past-end                a tensor's data_offsets end past the data
  st-overlap                 a tensor's range overlaps the previous one's
  st-dtype-size              a F32 tensor declared F16 (half the bytes)
  st-begin-after-end         data_offsets [end, begin]
  st-header-len N            the 8-byte header length replaced by N
  st-bad-json                the JSON header cut short (same length)
  st-dtype NAME              a tensor's dtype string replaced by NAME, its
                             shape adjusted to the same bytes (I8, U8: 4x)
  st-truncate N              the file cut to N bytes
  st-nan                     a weight's first element NaN
  st-drop NAME               tensor NAME removed from the header
  shard-missing FILE         the shard FILE removed (index kept)
  index-wrong-shard NAME     the index lists NAME in a shard without it
"""
import json
import os
import shutil
import struct
import sys


def read_st(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_st(path, header, body, raw_len=None):
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    n = len(text) if raw_len is None else raw_len
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n) + text + body)


def tensors_by_offset(header):
    items = [(k, v) for k, v in header.items() if k != "__metadata__"]
    return sorted(items, key=lambda kv: kv[1]["data_offsets"][0])


def main():
    good, out, kind = sys.argv[1:4]
    args = sys.argv[4:]
    if os.path.exists(out):
        shutil.rmtree(out)
    shutil.copytree(good, out)
    cfg_path = os.path.join(out, "config.json")
    st = os.path.join(out, "model.safetensors")
    if kind.startswith("config-") or kind == "no-config":
        with open(cfg_path) as f:
            cfg = json.load(f)
        if kind == "config-drop":
            del cfg[args[0]]
        elif kind == "config-set":
            for field, value in zip(args[0::2], args[1::2]):
                cfg[field] = json.loads(value)
        elif kind == "config-text":
            with open(cfg_path, "w") as f:
                f.write(args[0])
            return
        elif kind == "no-config":
            os.remove(cfg_path)
            return
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)
        return
    if kind == "no-weights":
        for name in os.listdir(out):
            if name.endswith(".safetensors") or name.endswith(".index.json"):
                os.remove(os.path.join(out, name))
        return
    if kind == "shard-missing":
        os.remove(os.path.join(out, args[0]))
        return
    if kind == "index-wrong-shard":
        index = os.path.join(out, "model.safetensors.index.json")
        with open(index) as f:
            idx = json.load(f)
        shards = sorted(set(idx["weight_map"].values()))
        here = idx["weight_map"][args[0]]
        idx["weight_map"][args[0]] = next(s for s in shards if s != here)
        with open(index, "w") as f:
            json.dump(idx, f, indent=2)
        return
    header, body = read_st(st)
    order = tensors_by_offset(header)
    name, info = order[1]  # a tensor that is not the first
    if kind == "st-past-end":
        b, e = info["data_offsets"]
        info["data_offsets"] = [b + len(body), e + len(body)]
    elif kind == "st-overlap":
        b, e = info["data_offsets"]
        info["data_offsets"] = [b - 4, e - 4]
    elif kind == "st-dtype-size":
        assert info["dtype"] == "F32"
        info["dtype"] = "F16"
    elif kind == "st-begin-after-end":
        b, e = info["data_offsets"]
        info["data_offsets"] = [e, b]
    elif kind == "st-header-len":
        with open(st, "rb") as f:
            data = f.read()
        with open(st, "wb") as f:
            f.write(struct.pack("<Q", int(args[0])) + data[8:])
        return
    elif kind == "st-bad-json":
        text = json.dumps(header, separators=(",", ":")).encode()
        text = text[:len(text) // 2]
        text += b" " * (-len(text) % 8)
        with open(st, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text + body)
        return
    elif kind == "st-dtype":
        name, info = next((k, v) for k, v in order if k.endswith("q_proj.weight"))
        assert info["dtype"] == "F32"
        info["dtype"] = args[0]
        if args[0] in ("I8", "U8", "BOOL"):
            info["shape"] = info["shape"][:-1] + [info["shape"][-1] * 4]
    elif kind == "st-truncate":
        with open(st, "rb") as f:
            data = f.read()
        with open(st, "wb") as f:
            f.write(data[:int(args[0])])
        return
    elif kind == "st-nan":
        name, info = next((k, v) for k, v in order if k.endswith("q_proj.weight"))
        b = info["data_offsets"][0]
        body = body[:b] + struct.pack("<f", float("nan")) + body[b + 4:]
    elif kind == "st-drop":
        del header[args[0]]
    else:
        sys.exit("unknown kind " + kind)
    write_st(st, header, body)


if __name__ == "__main__":
    main()
