"""Peak GPU memory of LoRA / QLoRA fine-tuning, counted from the published Qwen3-VL architectures.

Pure (no torch), so the preset table loads instantly. Weights are counted tensor group by tensor group from
the published config.json values, in the dtype they really have during training:

- LoRA: every base weight in bf16 (2 bytes).
- QLoRA: the language model's linear layers in NF4 with double-quantised scales (~0.516 bytes/param);
  everything else (vision tower and merger, embeddings, an untied lm_head, norms) in **fp32**, because
  peft's `prepare_model_for_kbit_training`, which the recipe calls, casts every non-4-bit weight to fp32.
  We count that cast rather than skip it: it is what peft does, and skipping it is untested at scale.
- LoRA weights, gradients and AdamW state: 16 bytes per LoRA parameter (peft keeps adapters in fp32),
  counted for the real target modules (`train.LM_LINEAR`, plus `train.VISION_LINEAR` with --train-vision).

`tests/test_training_memory.py` checks these counts against the real architectures built on the meta
device (parameters, dtypes after the QLoRA preparation, LoRA parameters from peft).
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit values + 8-bit absmax per 64 + fp32 per 256 absmax blocks
CUDA_OVERHEAD_GB = 1.5  # CUDA context, allocator fragmentation, kernels
LM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Architecture:
    """The published config.json values of one Qwen3-VL Instruct model that size its tensors."""

    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int
    tie_word_embeddings: bool
    vision_depth: int
    vision_hidden: int
    vision_intermediate: int
    deepstack: tuple[int, ...]
    kv_heads: int = 8
    head_dim: int = 128
    vocab_size: int = 151_936
    vision_heads: int = 16
    patch_size: int = 16
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    position_embeddings: int = 2304
    rope_theta: float = 5_000_000.0
    mrope_section: tuple[int, ...] = (24, 20, 20)

    # -- language model ------------------------------------------------------------------------------
    def lm_linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of the linear layers of one decoder layer (no biases in Qwen3)."""
        h, i = self.hidden_size, self.intermediate_size
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}  # fmt: skip

    @property
    def lm_linear_params(self) -> int:
        """The weights bitsandbytes quantises for QLoRA: the decoder layers' linear layers."""
        return self.layers * sum(a * b for a, b in self.lm_linear_shapes().values())

    @property
    def lm_norm_params(self) -> int:
        per_layer = 2 * self.hidden_size + 2 * self.head_dim  # two RMSNorms + q_norm, k_norm
        return self.layers * per_layer + self.hidden_size  # + the final norm

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        """0 when tied: the head shares the embedding's tensor."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    # -- vision tower --------------------------------------------------------------------------------
    def vision_linear_shapes(self) -> list[tuple[int, int, int]]:
        """(count, in, out) of the vision tower's and mergers' linear layers (all with bias)."""
        v, vi = self.vision_hidden, self.vision_intermediate
        merged = v * self.spatial_merge_size**2
        mergers = 1 + len(self.deepstack)
        return [
            (self.vision_depth, v, 3 * v),  # attn.qkv
            (self.vision_depth, v, v),  # attn.proj
            (self.vision_depth, v, vi),  # mlp.linear_fc1
            (self.vision_depth, vi, v),  # mlp.linear_fc2
            (mergers, merged, merged),  # merger(s).linear_fc1
            (mergers, merged, self.hidden_size),  # merger(s).linear_fc2
        ]

    @property
    def patch_inputs(self) -> int:
        return 3 * self.temporal_patch_size * self.patch_size**2

    @property
    def vision_params(self) -> int:
        v = self.vision_hidden
        merged = v * self.spatial_merge_size**2
        linear = sum(n * (a * b + b) for n, a, b in self.vision_linear_shapes())
        norms = self.vision_depth * 4 * v + 2 * v + len(self.deepstack) * 2 * merged
        patch = self.patch_inputs * v + v
        return linear + norms + patch + self.position_embeddings * v

    @property
    def total_params(self) -> int:
        return (
            self.vision_params
            + self.embedding_params
            + self.lm_head_params
            + self.lm_linear_params
            + self.lm_norm_params
        )

    def lora_params(self, rank: int, *, train_vision: bool = False) -> int:
        """Parameters peft adds: rank x (in + out) per targeted layer (kernel size for the patch conv)."""
        lm = self.layers * sum(a + b for a, b in self.lm_linear_shapes().values())
        vision = 0
        if train_vision:
            vision = sum(n * (a + b) for n, a, b in self.vision_linear_shapes())
            vision += self.patch_inputs + self.vision_hidden  # patch_embed.proj matches `...proj` too
        return rank * (lm + vision)

    def weight_bytes(self, method: str) -> float:
        """Bytes of the base weights during training (see the module docstring for the dtypes)."""
        if method == "qlora":
            kept = self.total_params - self.lm_linear_params
            return self.lm_linear_params * NF4_BYTES + kept * 4
        return self.total_params * 2


# Published config.json values of Qwen/Qwen3-VL-{2B,4B,8B,32B}-Instruct.
_SMALL_VISION = {"vision_depth": 24, "vision_hidden": 1024, "vision_intermediate": 4096,
                 "deepstack": (5, 11, 17)}  # fmt: skip
_LARGE_VISION = {"vision_depth": 27, "vision_hidden": 1152, "vision_intermediate": 4304,
                 "deepstack": (8, 16, 24)}  # fmt: skip
ARCHITECTURES: dict[str, Architecture] = {
    "2B": Architecture(2048, 6144, 28, 16, True, **_SMALL_VISION),
    "4B": Architecture(2560, 9728, 36, 32, True, **_SMALL_VISION),
    "8B": Architecture(4096, 12288, 36, 32, False, **_LARGE_VISION),
    "32B": Architecture(5120, 25600, 64, 64, False, **_LARGE_VISION),
}


def memory_breakdown(
    arch: Architecture,
    method: str,
    *,
    lora_rank: int = 16,
    batch_size: int = 1,
    max_image_tokens: int = 768,
    text_tokens: int = 1024,
    train_vision: bool = False,
) -> dict[str, float]:
    """Estimated peak GPU memory (GB) by part, with gradient checkpointing; "total" is their sum.

    Activations: one bf16 hidden state per layer and token kept, plus one layer's full activations
    (~34 x hidden per token) recomputed at a time. Logits: fp32 over the vocabulary for the loss. QLoRA
    also holds one dequantised (bf16) copy of the largest linear layer during its matmul.
    """
    tokens = batch_size * (max_image_tokens + text_tokens)
    parts = {
        "weights": arch.weight_bytes(method),
        "lora": arch.lora_params(lora_rank, train_vision=train_vision) * 16,
        "activations": tokens * arch.hidden_size * 2 * (arch.layers + 34),
        "logits": tokens * arch.vocab_size * 4,
        "dequantised": 0.0,
    }
    if method == "qlora":
        parts["dequantised"] = max(a * b for a, b in arch.lm_linear_shapes().values()) * 2.0
    out = {k: v / GB for k, v in parts.items()}
    out["overhead"] = CUDA_OVERHEAD_GB
    out["total"] = sum(out.values())
    return out
