"""reftx: a reference encoder-decoder Transformer and its decoder-only variant, for teaching.

Import what the notebooks need from here; each submodule holds one concept.
"""
from .model.config import BOS_ID, EOS_ID, MODEL_PRESETS, PAD_ID, SEP_ID, ModelConfig
from .model.generation import generate
from .model.transformer import BaseLanguageModel, ReferenceDecoderOnly, ReferenceTransformer
from .analysis.transfer import convert_decoder_only_to_encoder_decoder

__all__ = [
    "BOS_ID", "EOS_ID", "PAD_ID", "SEP_ID", "MODEL_PRESETS", "ModelConfig",
    "BaseLanguageModel", "ReferenceDecoderOnly", "ReferenceTransformer", "generate",
    "convert_decoder_only_to_encoder_decoder",
]
