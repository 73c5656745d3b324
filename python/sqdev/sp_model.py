"""A SentencePiece .model and the tokenizer.json transformers' LlamaConverter
(convert_slow_tokenizer.py, legacy mode) makes of a BPE one, as LLaMA-2's and
Mistral's Hugging Face folders ship it: the pieces as a BPE vocabulary, merges
generated from the vocabulary, byte_fallback, fuse_unk, the Prepend("\u2581")
+ Replace(" ", "\u2581") normalizer, no pre-tokenizer, a TemplateProcessing
that adds BOS, the Replace / ByteFallback / Fuse / Strip decoder, and a
tokenizer_config.json with add_bos_token. The ModelProto is read by hand
(protowire).
"""

import struct

from . import protowire


def read_sentencepiece(path):
    """ModelProto -> (pieces [(piece, score, type)], trainer {field: value},
    normalizer {field: value}); values are ints (varints) or bytes."""
    pieces, trainer, normalizer = [], {}, {}
    with open(path, "rb") as f:
        data = f.read()
    for field, _, v in protowire.fields(data):
        if field == 1:
            p = {1: b"", 2: b"\0\0\0\0", 3: 1}
            for g, _, x in protowire.fields(v):
                p[g] = x
            pieces.append((p[1].decode("utf-8"), struct.unpack("<f", p[2])[0], p[3]))
        elif field == 2:
            trainer = {g: x for g, _, x in protowire.fields(v)}
        elif field == 3:
            normalizer = {g: x for g, _, x in protowire.fields(v)}
    return pieces, trainer, normalizer


def spm_merges(vocab, vocab_scores):
    """transformers' generate_merges (convert_slow_tokenizer.py) for SentencePiece BPE:
    every split of every piece into two pieces of the vocabulary, ordered by the
    piece's score (highest first), then the longer left and right parts first,
    then the vocabulary ids of the parts."""
    merges = []
    for merge, score in vocab_scores:
        local = []
        for i in range(1, len(merge)):
            left, right = merge[:i], merge[i:]
            if left in vocab and right in vocab:
                local.append((left, right, score))
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda x: (x[2], len(x[0]), len(x[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def spm_to_tokenizer_json(model_path):
    """A BPE SentencePiece model -> (tokenizer.json, tokenizer_config.json,
    special_tokens_map.json) as LlamaConverter writes them, as dicts: the
    added tokens are the pieces of type UNKNOWN, CONTROL and USER_DEFINED,
    BOS/EOS/UNK the trainer spec's ids."""
    pieces, trainer, normalizer = read_sentencepiece(model_path)
    if trainer.get(3, 1) != 2:
        raise ValueError("%s: not a BPE SentencePiece model (model_type %s)" % (model_path, trainer.get(3, 1)))
    unk_id = trainer.get(40, 0)
    bos_id = trainer.get(41, 1)
    eos_id = trainer.get(42, 2)
    vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
    vocab_scores = [(p, 0.0 if i < 3 else s) for i, (p, s, _) in enumerate(pieces)]
    merges = spm_merges(vocab, vocab_scores)
    special = {i for i, (_, _, t) in enumerate(pieces) if t in (2, 3)}
    added = []
    for i, (p, _, t) in enumerate(pieces):
        if t in (2, 3, 4):
            added.append({"id": i, "content": p, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": i in special})
    bos = pieces[bos_id][0]
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": pieces[unk_id][0],
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "vocab": vocab,
            "merges": ["%s %s" % m for m in merges],
        },
    }
    added_decoder = {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                                       "single_word", "special")} for a in added}
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": added_decoder,
        "bos_token": bos,
        "clean_up_tokenization_spaces": False,
        "eos_token": pieces[eos_id][0],
        "legacy": True,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": None,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": pieces[unk_id][0],
    }
    special_map = {"bos_token": added_decoder[str(bos_id)], "eos_token": added_decoder[str(eos_id)],
                   "unk_token": added_decoder[str(unk_id)]}
    special_map = {k: {kk: v[kk] for kk in ("content", "lstrip", "normalized", "rstrip", "single_word")}
                   for k, v in special_map.items()}
    return tok, config, special_map
