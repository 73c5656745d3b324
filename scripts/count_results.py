#!/usr/bin/env python3
"""Counts individual test cases from ctest's JUnit file and lit's JSON results.

Usage: count_results.py CTEST_JUNIT_XML LIT_RESULTS_JSON [FUZZ_RESULTS]

Prints one line "N passed, N failed" (", N skipped" when some were skipped)
and exits 1 when something failed or nothing ran. The ctest entry "sq-lit" is
replaced by the lit cases it ran; if lit left no results file, the entry
counts as one failure. FUZZ_RESULTS (scripts/test.sh with SQ_FUZZ) has one
line per fuzz target, "PASS name" or "FAIL name"; a missing or empty file is
one failure.
"""

import json
import os
import sys
import xml.etree.ElementTree as ET

LIT_ENTRY = "sq-lit"
LIT_PASS = {"PASS", "XFAIL"}
LIT_SKIP = {"UNSUPPORTED", "SKIPPED", "EXCLUDED"}


def main():
    junit, lit_json = sys.argv[1], sys.argv[2]
    passed = failed = skipped = 0
    lit_ran = False
    if os.path.exists(junit):
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = case.get("name", "")
            status = case.get("status", "run")
            if name == LIT_ENTRY:
                lit_ran = status != "notrun"
                if not os.path.exists(lit_json) and lit_ran:
                    failed += 1  # lit crashed or never started
                continue
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
            elif status in ("notrun", "disabled") or case.find("skipped") is not None:
                skipped += 1
            else:
                passed += 1
    else:
        print("count_results: no ctest results (%s)" % junit, file=sys.stderr)
        failed += 1
    if lit_ran and os.path.exists(lit_json):
        with open(lit_json) as f:
            for test in json.load(f).get("tests", []):
                code = test.get("code")
                if code in LIT_PASS:
                    passed += 1
                elif code in LIT_SKIP:
                    skipped += 1
                else:
                    failed += 1
    if len(sys.argv) > 3:
        fuzz = sys.argv[3]
        lines = []
        if os.path.exists(fuzz):
            with open(fuzz) as f:
                lines = [l.split() for l in f if l.strip()]
        if not lines:
            print("count_results: no fuzz results (%s)" % fuzz, file=sys.stderr)
            failed += 1
        for words in lines:
            if words[0] == "PASS":
                passed += 1
            else:
                failed += 1
                print("count_results: fuzz target failed: %s" % " ".join(words[1:]),
                      file=sys.stderr)
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
