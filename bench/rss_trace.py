#!/usr/bin/python3
"""Runs a command and samples its resident memory over time.

    bench/rss_trace.py [--interval S] [--trace FILE] -- COMMAND [ARGS...]

Every S seconds (default 0.2) it reads VmRSS (and RssAnon / RssFile) of the
command's process from /proc/PID/status. The command's stderr lines are
echoed with the elapsed time, so that the phases a tool prints (the
calibration's summary, for example) can be placed on the memory curve. At
the end it prints, on stderr, the peak VmRSS (with the time it was reached),
the peak anonymous memory, the wall time and the exit status; with --trace,
every sample goes to FILE as "seconds rss_mib anon_mib file_mib". Exits
with the command's status. Linux only (reads /proc); standard library only.
"""

import argparse
import os
import subprocess
import sys
import threading
import time


def read_status(pid):
    values = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                    values[key] = int(rest.split()[0]) / 1024.0  # MiB
    except OSError:
        return None
    return values


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        usage="%(prog)s [--interval S] [--trace FILE] -- COMMAND [ARGS...]")
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--trace")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command")
    t0 = time.monotonic()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                            errors="replace")

    def echo():
        for line in proc.stderr:
            sys.stderr.write(f"[{time.monotonic() - t0:8.1f} s] {line}")
            sys.stderr.flush()

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    samples = []
    hwm = 0.0
    while proc.poll() is None:
        s = read_status(proc.pid)
        if s and "VmRSS" in s:
            samples.append((time.monotonic() - t0, s["VmRSS"],
                            s.get("RssAnon", 0.0), s.get("RssFile", 0.0)))
            hwm = max(hwm, s.get("VmHWM", 0.0))
        time.sleep(args.interval)
    wall = time.monotonic() - t0
    reader.join(timeout=5)
    rc = proc.returncode
    if args.trace:
        with open(args.trace, "w") as f:
            for t, rss, anon, file_ in samples:
                f.write(f"{t:.2f} {rss:.1f} {anon:.1f} {file_:.1f}\n")
    if samples:
        peak = max(samples, key=lambda s: s[1])
        anon = max(samples, key=lambda s: s[2])
        sys.stderr.write(
            f"rss_trace: peak VmRSS {peak[1] / 1024:.2f} GiB at {peak[0]:.1f} s "
            f"(anon {peak[2] / 1024:.2f}, file {peak[3] / 1024:.2f}); "
            f"peak anon {anon[2] / 1024:.2f} GiB at {anon[0]:.1f} s; "
            f"VmHWM {hwm / 1024:.2f} GiB; wall {wall:.1f} s; exit {rc}\n")
    sys.exit(rc)


if __name__ == "__main__":
    main()
