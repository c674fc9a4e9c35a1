"""reftx: a reference encoder-decoder Transformer and its decoder-only variant, for teaching.

Import what the notebooks need from here; each submodule holds one concept.
"""

from .constants import BOS_ID, EOS_ID, PAD_ID, SEP_ID
from .model.config import MODEL_PRESETS, ModelConfig
from .model.convert import convert_decoder_only_to_encoder_decoder
from .model.generation import generate
from .model.transformer import BaseLanguageModel, ReferenceDecoderOnly, ReferenceTransformer

__all__ = [
    "BOS_ID",
    "EOS_ID",
    "PAD_ID",
    "SEP_ID",
    "MODEL_PRESETS",
    "ModelConfig",
    "BaseLanguageModel",
    "ReferenceDecoderOnly",
    "ReferenceTransformer",
    "generate",
    "convert_decoder_only_to_encoder_decoder",
]
