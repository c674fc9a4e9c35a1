"""reftx: a reference encoder-decoder Transformer and its decoder-only variant, for teaching.

What a lesson needs is importable from here; each subpackage holds one layer of the stack: ``model``
(layers, the two models, generation, conversion), ``data`` (corpora, tokenizer, rows, batches),
``train`` (step, loop, checkpoints, evaluation) and ``attention`` (extraction, statistics, plots).
"""

from .constants import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID, SEP_ID
from .data.batching import pad_batch, token_budget_batches
from .data.corpora import CORPORA, load_corpus
from .data.preprocessing import midpoint_split
from .data.tokenizer import load_tokenizer
from .model.config import MODEL_SIZES, ModelConfig
from .model.convert import convert_decoder_only_to_encoder_decoder
from .model.generation import generate
from .model.layers import causal_mask, key_padding_mask, prefix_lm_mask
from .model.transformer import ReferenceDecoderOnly, ReferenceTransformer
from .paths import data_search_path, repo_root
from .train.checkpoint import load_model
from .train.evaluation import compute_rouge, evaluate_loss, generate_summaries, perplexity
from .train.trainer import TrainConfig, fit
