"""The models and what a forward pass needs: ``config``, ``layers``, ``transformer`` (the two models),
``packing`` (the ``source [SEP] target`` row, checks at the boundary) and ``generation``. It imports only
torch, ``reftx_lib.constants`` and three logits processors of ``transformers``: a model is read, built and
tested without data, trainer or course (Exp 5's conversion is ``course.transfer``)."""
