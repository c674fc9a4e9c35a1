"""The token ids every part of reftx agrees on, defined once; any module may import this one. The
tokenizer places its special tokens at ids 0-3 (``reftx_lib.data.tokenizer`` checks it when it trains),
the models default to them (``ModelConfig``) and the batching pads with ``PAD_ID``. ``IGNORE_INDEX``
marks a label no loss counts, as in ``torch.nn.functional.cross_entropy`` and Hugging Face's models."""

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<sep>")
PAD_ID, BOS_ID, EOS_ID, SEP_ID = 0, 1, 2, 3  # the ids of SPECIAL_TOKENS, in order
IGNORE_INDEX = -100
