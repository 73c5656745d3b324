#!/usr/bin/python3
"""Renders the runs bench/ratios.sh recorded (JSON lines) as one markdown table.

    /usr/bin/python3 bench/ratios_table.py RUN.jsonl --models DIR [--prompts "128 512 2048"]
        [--short 16] [--busy-max 15] [--command CMD] [--sq-compile PATH]

Rows: per shape and thread count, one per engine (sq, llama.cpp, ort), then
"SQ / llama.cpp" and "SQ / ort": SQ's value divided by the peer's in every
column (tok/s: above 1 is SQ faster; seconds, ms and MB: below 1 is SQ
better). Weight bytes per decoded token: SQ from the manifest embedded in
model.so (every weight but the embedding table; lib/Runtime/ModelFormat.cpp),
the peers from bench/make_q4_peers.py's JSON (linears + LM head + norms).
"""

import argparse
import json
import os
import platform
import sys
import time


def sq_bytes_per_token(so):
    """Bytes of every weight in the manifest but the embedding table, and the
    LM head's storage ("weight SLOT BITS STORAGE ROWS COLS NAME" lines, STORAGE
    0 fp32, 1 f16, 2 bf16), or (None, "") when the manifest cannot be read."""
    try:
        text = open(so, "rb").read()
        man = text[text.index(b"sq-model "):].split(b"\0")[0].decode()
    except (OSError, ValueError):
        return None, ""
    ws = [l.split(" ", 6)[1:] for l in man.splitlines() if l.startswith("weight ")]

    def nbytes(b, st, r, c):
        return r * ((c * b + 7) // 8) if b else r * c * (4 if st == 0 else 2)

    total = sum(nbytes(int(b), int(st), int(r), int(c)) for _, b, st, r, c, n in ws
                if "embed_tokens" not in n)
    fmt = lambda b, st: "int%s" % b if int(b) else ("fp32", "fp16", "bf16")[int(st)]
    head = ",".join("%s" % fmt(b, st) for _, b, st, r, c, n in ws if "lm_head" in n)
    return (total or None), head


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--models", required=True)
    ap.add_argument("--prompts", default="128 512 2048")
    ap.add_argument("--short", type=int, default=16)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--long-decode", type=int, default=8)
    ap.add_argument("--busy-max", type=float, default=15)
    ap.add_argument("--command", default="bench/ratios.sh")
    ap.add_argument("--sq-compile", default="")
    a = ap.parse_args()
    prompts = [int(p) for p in a.prompts.split()]
    runs = [json.loads(l) for l in open(a.jsonl) if l.strip()]

    bw = {}
    for r in runs:
        if r.get("kind") == "bandwidth" and r.get("result"):
            res = r["result"]
            t = int(r["threads"])
            gbs, var = (res["read_1t_gbs"], res.get("read_1t_variant", "")) if t == 1 else \
                (res["read_nt_gbs"], res.get("read_nt_variant", ""))
            bw[t] = (gbs, var, r["busy0"], r["busy1"])

    checks = [r for r in runs if r.get("kind") == "check"]
    groups = {}  # (shape, layers, threads) -> engine -> list of runs
    order = []
    for r in runs:
        if r.get("kind") in ("bandwidth", "check"):
            continue
        key = (r["shape"], int(r["layers"]), int(r["threads"]))
        if key not in groups:
            groups[key] = {}
            order.append(key)
        groups[key].setdefault(r["engine"], []).append(r)

    cols = (["load s"] + ["prefill tok/s @%d" % p for p in prompts] + ["decode tok/s @%d" % a.short]
            + ["ms/token @%d" % p for p in prompts] + ["% of bound", "MB/token", "peak RSS MB",
                                                       "CPU busy % before/after"])
    out = []
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    out.append("Generated %s by `%s` on %s, %d cores (%s)." % (now, a.command, cpu or platform.machine(),
                                                            os.cpu_count(), platform.node()))
    if a.sq_compile:
        try:
            st = os.stat(a.sq_compile)
            out.append("SQ compiler: `%s` (built %s)." % (
                a.sq_compile, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(st.st_mtime))))
        except OSError:
            out.append("SQ compiler: `%s` (missing)." % a.sq_compile)
    if bw:
        out.append("Read bandwidth (bench/bandwidth.c, best variant, 2 GiB buffer): " + "; ".join(
            "%d thread%s %.1f GB/s (%s; CPU busy %s%%/%s%%)" % (t, "s" if t > 1 else "", g, v, b0, b1)
            for t, (g, v, b0, b1) in sorted(bw.items())) + ".")
    out.append("")
    out.append("Decode tok/s @%d: %d decoded tokens after a %d-token prompt (median); prefill tok/s @P and "
               "ms/token @P: a P-token prompt, then %d tokens decoded at context P. %% of bound = decode tok/s @%d / "
               "(read GB/s at that thread count / weight bytes per token). Ratio rows: SQ's value / the peer's "
               "in each column (tok/s and %%: > 1 is SQ ahead; s, ms, MB: < 1 is SQ ahead). Rows marked "
               "**loaded** saw more than %g%% CPU busy (other processes) before or after one of their runs: "
               "their numbers are low and noisy." % (a.short, a.decode, a.short, a.long_decode, a.short, a.busy_max))
    out.append("")
    out.append("| shape | layers | threads | engine | " + " | ".join(cols) + " |")
    out.append("|" + "---|" * (4 + len(cols)))
    notes = []

    def fnum(x, fmt):
        return fmt % x if isinstance(x, (int, float)) and x == x else "-"

    for key in order:
        shape, layers, threads = key
        meta = {}
        try:
            meta = json.load(open(os.path.join(a.models, "%s-l%d" % (shape, layers), "q4.json")))
        except (OSError, ValueError):
            pass
        vals = {}
        for eng in ("sq", "llama.cpp", "ort"):
            rs = groups[key].get(eng)
            if not rs:
                continue
            v = {c: None for c in cols}
            busy = []
            errors = []
            rss = []
            for r in rs:
                if "busy0" in r:
                    busy += [int(r["busy0"]), int(r["busy1"])]
                res = r.get("result")
                if not res:
                    errors.append(r.get("error", "no result"))
                    continue
                if res.get("peak_rss_bytes"):
                    rss.append(res["peak_rss_bytes"] / 1e6)
                p = int(r["prompt"])
                if r["kind"] == "short":
                    v["decode tok/s @%d" % a.short] = res.get("decode_tokens_per_s")
                    v["load s"] = res.get("open_s", res.get("load_s"))
                else:
                    pre = res.get("prefill_tokens_per_s", res.get("prompt_tokens_per_s"))
                    v["prefill tok/s @%d" % p] = pre
                    v["ms/token @%d" % p] = res.get("ms_per_token")
            v["peak RSS MB"] = max(rss) if rss else None
            if eng == "sq":
                b, head = sq_bytes_per_token(os.path.join(a.models, "%s-l%d" % (shape, layers), "sq", "model.so"))
                if head:
                    notes.append("%s, %d layers: SQ's lm_head is %s." % (shape, layers, head))
            elif eng == "llama.cpp":
                b = meta.get("gguf_bytes_per_token")
            else:
                b = meta.get("onnx_bytes_per_token")
            v["MB/token"] = b / 1e6 if b else None
            d = v["decode tok/s @%d" % a.short]
            if b and d and threads in bw:
                v["% of bound"] = 100.0 * d / (bw[threads][0] * 1e9 / b)
            loaded = busy and max(busy) > a.busy_max
            v["CPU busy % before/after"] = (("%d-%d" % (min(busy), max(busy))) if busy else "-") + \
                (" **loaded**" if loaded else "")
            vals[eng] = v
            for e in sorted(set(errors)):
                notes.append("%s, %d layers, %d threads, %s: %s" % (shape, layers, threads, eng, e))
        fmts = {"load s": "%.2f", "% of bound": "%.0f%%", "MB/token": "%.0f", "peak RSS MB": "%.0f"}
        for eng, v in vals.items():
            cells = []
            for c in cols:
                x = v[c]
                if isinstance(x, str):
                    cells.append(x)
                elif c.startswith("prefill") or c.startswith("decode"):
                    cells.append(fnum(x, "%.1f" if (x or 0) >= 10 else "%.2f"))
                elif c.startswith("ms/token"):
                    cells.append(fnum(x, "%.1f"))
                else:
                    cells.append(fnum(x, fmts.get(c, "%.2f")))
            out.append("| %s | %d | %d | %s | %s |" % (shape, layers, threads,
                                                       {"sq": "SQ W4A4KV4", "llama.cpp": "llama.cpp Q4_0",
                                                        "ort": "onnxruntime MatMulNBits"}[eng], " | ".join(cells)))
        for peer in ("llama.cpp", "ort"):
            if "sq" in vals and peer in vals:
                cells = []
                for c in cols:
                    x, y = vals["sq"][c], vals[peer][c]
                    if c.startswith("CPU busy"):
                        cells.append("")
                    elif isinstance(x, (int, float)) and isinstance(y, (int, float)) and y:
                        cells.append("%.2f" % (x / y))
                    else:
                        cells.append("-")
                out.append("| %s | %d | %d | *SQ / %s* | %s |" % (shape, layers, threads, peer, " | ".join(cells)))
    for c in checks:
        res = c.get("result")
        notes.append("%s, %s layers: peer cross-check (same Q4_0 weights, 8 tokens), onnxruntime vs llama.cpp "
                     "logits: %s" % (c["shape"], c["layers"], "rel. max error %.3g" % res["rel_max_error"]
                                     if res else "failed (%s)" % c.get("error", "no result")))
    if notes:
        out.append("")
        for n in dict.fromkeys(notes):
            out.append("- " + n)
    print("\n".join(out))


if __name__ == "__main__":
    main()
