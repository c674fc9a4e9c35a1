"""reftx: a reference encoder-decoder Transformer and its decoder-only variant, for teaching.

What a lesson needs is importable from here. The subpackages are the layers of the stack: ``model``,
``data``, ``train`` and ``attention``, each listing its modules in its docstring."""

from .constants import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID, SEP_ID
from .data.batching import pad_batch, token_budget_batches
from .data.corpora import CORPORA, load_corpus
from .data.preprocessing import midpoint_split
from .data.tokenizer import load_tokenizer
from .model.config import MODEL_SIZES, ModelConfig
from .model.generation import generate
from .model.layers import causal_mask, key_padding_mask, prefix_lm_mask
from .model.transformer import ReferenceDecoderOnly, ReferenceTransformer
from .paths import data_search_path, repo_root
from .train.checkpoint import load_model
from .train.evaluation import compute_rouge, evaluate_loss, generate_summaries, perplexity
from .train.trainer import TrainConfig, fit
