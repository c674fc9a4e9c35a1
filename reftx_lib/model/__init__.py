"""The models and everything a forward pass needs: ``config`` (``ModelConfig`` and the seed's sizes),
``layers`` (positions, masks, attention, the encoder and decoder layers), ``transformer``
(``ReferenceTransformer`` and ``ReferenceDecoderOnly``, a prefix LM with ``prefix_lm=True``),
``packing`` (the ``source [SEP] target`` row and the checks at the boundary), ``generation`` (greedy,
sampling and beam search) and ``convert`` (a decoder-only model seeds an encoder-decoder). It imports
only torch, ``reftx_lib.constants`` and one logits processor of ``transformers``: a model can be
read, built and tested without the data, the trainer or the course.
"""
