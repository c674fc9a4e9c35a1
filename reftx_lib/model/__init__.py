"""The models and what a forward pass needs: ``config``, ``layers``, ``transformer`` (the two models),
``packing`` (the ``source [SEP] target`` row, checks at the boundary), ``generation`` and ``convert``
(a decoder-only model seeds an encoder-decoder). It imports only torch, ``reftx_lib.constants`` and one
logits processor of ``transformers``: a model is read, built and tested without data, trainer or course.
"""
