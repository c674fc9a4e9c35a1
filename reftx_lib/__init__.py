"""reftx: a reference encoder-decoder Transformer and its decoder-only variant, for teaching.

Import what the notebooks need from here; each submodule holds one concept.
"""
from .config import BOS_ID, EOS_ID, MODEL_PRESETS, PAD_ID, SEP_ID, ModelConfig
from .generation import generate
from .models import BaseLanguageModel, ReferenceDecoderOnly, ReferenceTransformer
from .transfer import convert_decoder_only_to_encoder_decoder

__all__ = [
    "BOS_ID", "EOS_ID", "PAD_ID", "SEP_ID", "MODEL_PRESETS", "ModelConfig",
    "BaseLanguageModel", "ReferenceDecoderOnly", "ReferenceTransformer", "generate",
    "convert_decoder_only_to_encoder_decoder",
]
