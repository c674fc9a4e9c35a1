"""Model configuration and the seed's model sizes: one dataclass holds every architectural choice, so a
checkpoint can rebuild its model from the stored dict alone (see ``ModelConfig.to_dict``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from ..constants import BOS_ID, EOS_ID, PAD_ID, SEP_ID

POSITIONS = ("sinusoidal", "learned")
INIT_STD = 0.02  # GPT-2's N(0, 0.02) for every weight matrix and the token embedding

# The seed's table; d_ff = 4 * d_model. ``nano`` (unit tests) and ``mini`` (laptop scaling ladders) are ours.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "nano": dict(d_model=32, n_layers=1, n_heads=2),
    "mini": dict(d_model=64, n_layers=2, n_heads=4),
    "tiny": dict(d_model=128, n_layers=2, n_heads=4),
    "small": dict(d_model=256, n_layers=4, n_heads=8),
    "medium": dict(d_model=512, n_layers=6, n_heads=8),
    "large": dict(d_model=768, n_layers=8, n_heads=12),
}


@dataclass(frozen=True)
class ModelConfig:
    """Every size and switch of a model; for ``ReferenceTransformer`` ``n_layers`` counts the layers
    *per stack* (encoder and decoder each), as in Vaswani et al. (2017)."""

    vocab_size: int
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int | None = None  # None means 4 * d_model
    dropout: float = 0.1  # on the embeddings and on what each sub-layer writes into the residual stream
    # On the attention probabilities: 0, as BART and MBart. Its (B, H, T, S) random mask cost a CPU step a
    # quarter of its time and kept attention off the fused kernel (docs/performance.md).
    attention_dropout: float = 0.0
    max_len: int = 1024
    pad_token_id: int = PAD_ID
    bos_token_id: int = BOS_ID
    eos_token_id: int = EOS_ID
    sep_token_id: int = SEP_ID
    tie_embeddings: bool = True
    # Pre-LN never normalizes the residual stream before the final LayerNorm, so the 2017 paper's embedding
    # scale and unit sinusoids would drown what each block adds at init (notebook 00, ``tools.learning``).
    scale_embedding: bool = False  # multiply token embeddings by sqrt(d_model), as in the 2017 paper
    position_scale: float | None = None  # amplitude of the sinusoids; None: as ``embed_norm`` needs them
    # LayerNorm on token + position, as BART and MBart (not GPT-2); None: the architecture's own (only the
    # encoder-decoder's). Without it our encoder-decoder barely learned to copy its source, and its
    # summaries ignored the dialogue (issue 30, ``python -m tools --learning --corpora copy``).
    embed_norm: bool | None = None
    positions: str = "sinusoidal"  # or "learned" (GPT-2's trained (max_len, D) table); they learn alike
    prefix_lm: bool = False  # decoder-only, reading each row up to its first SEP both ways

    def __post_init__(self) -> None:
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.d_model % self.n_heads:
            allowed = [h for h in range(1, self.d_model + 1) if self.d_model % h == 0]
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); "
                f"allowed n_heads values here: {allowed}"
            )
        if self.position_scale is None and self.embed_norm is not None:
            # Plain: sinusoids of RMS INIT_STD, as loud as the tokens at init (sin/cos have RMS 1/sqrt(2)).
            # Normalized: fixed at 0.1, where the norm cannot let the growing token embeddings drown them.
            object.__setattr__(self, "position_scale", 0.1 if self.embed_norm else INIT_STD * 2**0.5)
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {list(POSITIONS)}, got {self.positions!r}")
        if self.position_scale is not None and not self.position_scale > 0:
            raise ValueError(f"position_scale must be positive, got {self.position_scale!r}")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id"):
            if not 0 <= (value := getattr(self, name)) < self.vocab_size:
                raise ValueError(f"{name} must be in [0, vocab_size={self.vocab_size}), got {value}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_size(cls, name: str, vocab_size: int, **overrides) -> ModelConfig:
        """Build a config from a named size, with keyword overrides (e.g. ``dropout=0.0``)."""
        if name not in MODEL_SIZES:
            raise ValueError(f"unknown model size {name!r}; allowed values: {sorted(MODEL_SIZES)}")
        return cls(vocab_size=vocab_size, **{**MODEL_SIZES[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, stored: dict) -> ModelConfig:
        """Rebuild a stored config, refusing one of an older reftx whose model this one would build
        differently (never a silent mismatch)."""
        stored = {"embed_norm": False, **stored}  # stored before issue 30: built without the norm
        if "scale_embedding" not in stored or not stored.pop("norm_first", True):
            raise ValueError(
                "this model config was stored by an older reftx (before the embedding fix of issue 14, "
                "or post-LN with norm_first=False), whose model is no longer built: train the model again"
            )
        return cls(**stored)

    def replace(self, **changes) -> ModelConfig:
        return replace(self, **changes)
