"""Helpers that SQ's test and benchmark scripts share (not part of the `sq`
binding, and needing nothing beyond Debian's python3 and python3-numpy):

  protowire  protobuf's wire format read by hand (no protobuf package)
  sp_model   a SentencePiece .model and the tokenizer.json transformers'
             LlamaConverter makes of it
  rope       RoPE inverse frequencies, with LLaMA-3.1 ("llama3") scaling

Scripts find the package through their own location:

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "..", "..", "python"))
    from sqdev import rope
"""
