"""RefineVAD model configuration: every choice the model spec marks *config*, with the spec's defaults."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

# UCF-Crime's 13 anomaly categories, the paper's main benchmark (normal videos have no category).
UCF_CRIME_CATEGORIES: tuple[str, ...] = (
    "Abuse",
    "Arrest",
    "Arson",
    "Assault",
    "Burglary",
    "Explosion",
    "Fighting",
    "RoadAccidents",
    "Robbery",
    "Shooting",
    "Shoplifting",
    "Stealing",
    "Vandalism",
)

Injection = Literal["none", "linear", "addnorm_ffn", "cross_attention"]


class RefineVADConfig(BaseModel):
    """Shapes, switches and defaults of the RefineVAD head (MoTAR + CORE + scorer)."""

    model_config = ConfigDict(extra="forbid")

    # Input
    feature_dim: int = Field(512, gt=0, description="D: snippet feature size (visual, or visual+text)")
    category_names: list[str] = Field(default_factory=lambda: list(UCF_CRIME_CATEGORIES), min_length=1)
    frames_per_snippet: int = Field(16, gt=0)
    sampled_frames_per_snippet: int = Field(16, gt=0)
    train_snippets: int = Field(32, gt=0, description="T used when training resamples each video")
    input_norm: Literal["none", "standardize"] = Field(
        "none",
        description="standardize = per-channel z-scores with the training snippets' mean and std, stored in "
        "the checkpoint (for features whose channels differ in scale, e.g. concatenated two-stream features); "
        "none = the paper's raw features",
    )

    # MoTAR
    use_motar: bool = True
    fold_div: int = Field(8, ge=2, description="K: s_t = floor(r_t * D / K)")
    shift_hidden: tuple[int, int] = (32, 16)
    shift_grad: Literal["ste", "none"] = "ste"
    shift_ste_temperature: float = Field(1.0, gt=0, description="width, in channels, of the soft mask's ramp")
    transformer_layers: int = Field(2, ge=0)
    transformer_heads: int = Field(4, gt=0)
    transformer_ff: int = Field(2048, gt=0)
    attention_window: int | None = Field(
        None,
        ge=1,
        description="None = MoTAR's self-attention sees every position (the paper); w = each position attends "
        "only to positions within w steps (a sliding-window band mask, as Longformer's local attention), so "
        "the attention reaches w * transformer_layers positions each way (the temporal shift adds one; CORE's "
        "pooled injection still sees the whole window). Positions are the train_snippets bins in training "
        "and snippets at inference",
    )
    dropout: float = Field(0.1, ge=0, lt=1)

    # CORE
    proj_dim: int = Field(512, gt=0, description="d_proj")
    emb_dim: int = Field(64, gt=0, description="d_emb: category prototype size")
    attn_heads: int = Field(4, gt=0)
    classifier_hidden: int = Field(256, gt=0)
    injection: Injection = "cross_attention"
    soft_weights: bool = Field(
        True, description="False = hard top-1 category instead of the soft distribution"
    )
    pooling: Literal["weighted", "topk"] = "weighted"
    tau: float = Field(0.5, ge=0, le=1, description="category anomaly probability threshold for the set S")
    topk_divisor: int = Field(16, gt=0, description="k = max(1, T // topk_divisor + 1)")

    @model_serializer(mode="wrap")
    def _omit_unset_window(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Checkpoints, exports and run fingerprints with global attention stay byte-identical to those written
        # before the field existed, so older releases (extra="forbid") still load them.
        data = handler(self)
        if self.attention_window is None:
            data.pop("attention_window", None)
        return data

    @property
    def num_categories(self) -> int:
        return len(self.category_names)

    @model_validator(mode="after")
    def _check(self) -> RefineVADConfig:
        if self.use_motar and self.transformer_layers and self.feature_dim % self.transformer_heads:
            raise ValueError(
                f"feature_dim {self.feature_dim} must be divisible by transformer_heads {self.transformer_heads}"
            )
        if self.injection == "cross_attention" and self.feature_dim % self.attn_heads:
            raise ValueError(
                f"feature_dim {self.feature_dim} must be divisible by attn_heads {self.attn_heads}"
            )
        if len(set(self.category_names)) != len(self.category_names):
            raise ValueError("category_names must be unique")
        if self.sampled_frames_per_snippet > self.frames_per_snippet:
            raise ValueError("sampled_frames_per_snippet cannot exceed frames_per_snippet")
        return self


def topk_count(num_snippets: int, divisor: int = 16) -> int:
    """k of the top-k MIL and top-k pooling: max(1, T // divisor + 1)."""
    return max(1, num_snippets // divisor + 1)
