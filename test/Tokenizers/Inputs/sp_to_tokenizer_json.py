"""Writes a Hugging Face tokenizer folder from a SentencePiece BPE .model.

  sp_to_tokenizer_json.py MODEL OUT_DIR

OUT_DIR gets the tokenizer.json and tokenizer_config.json that transformers'
LlamaConverter (convert_slow_tokenizer.py, legacy mode) writes for LLaMA-2:
python/sqdev/sp_model.py, which make_hf_checkpoints.py uses for the
converted stories260K folder too.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "python"))
from sqdev.sp_model import spm_to_tokenizer_json  # noqa: E402


def main():
    model, out = sys.argv[1], sys.argv[2]
    tok, config, _ = spm_to_tokenizer_json(model)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    print("%d pieces, %d merges" % (len(tok["model"]["vocab"]), len(tok["model"]["merges"])))


if __name__ == "__main__":
    main()
