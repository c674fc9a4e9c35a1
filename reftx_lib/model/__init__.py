"""The models and everything a forward pass needs: ``config`` (``ModelConfig`` and the seed's sizes),
``layers`` (positions, masks, attention, the encoder and decoder layers), ``transformer``
(``ReferenceTransformer``, ``ReferenceDecoderOnly`` and its prefix-LM reading ``ReferencePrefixLM``, on one
``BaseLanguageModel``), ``packing``
(the ``source [SEP] target`` row, known nowhere else), ``loss`` (the cross-entropy and its fused CPU
form) and ``generation`` (greedy, sampling and beam search). It imports only torch, the save/load
mixin of ``huggingface_hub`` and ``reftx_lib.constants``: a model can be read, built and tested
without the data, the trainer or the course.
"""
