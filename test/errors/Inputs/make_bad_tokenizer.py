"""Writes broken Hugging Face tokenizer folders for errors/tokenizer-json.test.

  make_bad_tokenizer.py OUT_DIR

Each case is a folder OUT_DIR/CASE with a tokenizer.json (and, for the
tokenizer_config.json cases, that file): a small valid byte-level BPE
tokenizer with one entry made wrong. OUT_DIR/good is the valid one.
"""

import copy
import json
import os
import sys


def good():
    vocab = {"a": 0, "b": 1, "ab": 2, "\u0120": 3, "\u0120ab": 4}
    return {
        "version": "1.0",
        "added_tokens": [{"id": 5, "content": "<|end|>", "special": True, "normalized": False,
                          "lstrip": False, "rstrip": False, "single_word": False}],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFC"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\s?\\p{L}+"}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                           "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": False, "vocab": vocab,
                  "merges": ["a b", "\u0120 ab"]},
    }


def main():
    out = sys.argv[1]
    cases = {}
    t = good()
    cases["good"] = t
    t = good(); t["model"] = {"type": "Unigram", "unk_id": 0, "vocab": [["a", -1.0]]}
    cases["unigram"] = t
    t = good(); t["model"]["type"] = "WordPiece"
    cases["wordpiece"] = t
    t = good(); t["pre_tokenizer"]["pretokenizers"][1] = {"type": "Whitespace"}
    cases["pretokenizer"] = t
    t = good(); t["normalizer"]["normalizers"].append({"type": "Lowercase"})
    cases["normalizer"] = t
    t = good(); t["decoder"] = {"type": "Sequence", "decoders": [{"type": "WordPiece", "prefix": "##"}]}
    cases["decoder"] = t
    t = good(); t["post_processor"] = {"type": "Unknown"}
    cases["postprocessor"] = t
    t = good(); t["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(\\p{L}+"
    cases["regex"] = t
    t = good(); t["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways"
    cases["behavior"] = t
    t = good(); t["model"]["merges"].append("a zz")
    cases["merge"] = t
    t = good(); t["model"]["merges"].append(["a"])
    cases["mergeshape"] = t
    t = good(); t["model"]["vocab"]["b"] = "one"
    cases["vocabid"] = t
    t = good(); t["model"]["unk_token"] = "<unk>"
    cases["unk"] = t
    t = good(); del t["added_tokens"][0]["content"]
    cases["added"] = t
    t = good(); del t["model"]
    cases["nomodel"] = t
    for name, tok in cases.items():
        os.makedirs(os.path.join(out, name), exist_ok=True)
        with open(os.path.join(out, name, "tokenizer.json"), "w") as f:
            json.dump(tok, f)
    # Not JSON, truncated, a config naming a token that does not exist, a
    # config with add_bos_token of the wrong type.
    text = json.dumps(good())
    os.makedirs(os.path.join(out, "truncated"), exist_ok=True)
    open(os.path.join(out, "truncated", "tokenizer.json"), "w").write(text[:len(text) // 2])
    os.makedirs(os.path.join(out, "notjson"), exist_ok=True)
    open(os.path.join(out, "notjson", "tokenizer.json"), "wb").write(b"\x00\x01 binary")
    os.makedirs(os.path.join(out, "bos"), exist_ok=True)
    open(os.path.join(out, "bos", "tokenizer.json"), "w").write(text)
    open(os.path.join(out, "bos", "tokenizer_config.json"), "w").write(json.dumps({"bos_token": "<s>"}))
    os.makedirs(os.path.join(out, "addbos"), exist_ok=True)
    open(os.path.join(out, "addbos", "tokenizer.json"), "w").write(text)
    open(os.path.join(out, "addbos", "tokenizer_config.json"), "w").write(
        json.dumps({"bos_token": "<|end|>", "add_bos_token": "yes"}))
    os.makedirs(os.path.join(out, "empty"), exist_ok=True)


if __name__ == "__main__":
    main()
