"""A random, tiny Qwen3-VL written to disk exactly like a downloaded one, for offline tests.

Tests, CI and demos cannot download Qwen3-VL, yet they must exercise the same loading path
(`AutoModelForImageTextToText` + processor from a model directory) as a real model. This module writes a
complete model directory (config, safetensors weights, tokenizer files, chat template, preprocessor configs)
from a ~0.3 M-parameter `Qwen3VLConfig` with random weights and a small byte-level BPE tokenizer trained
offline. It answers nonsense, quickly and deterministically.

Run `python -m napari_fracto.testing.tiny_vlm OUT_DIR` to build one from the command line.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

# Qwen's special tokens in the order (and so with the relative ids) of the official tokenizer.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Added but not special in Qwen's tokenizer (they must survive decoding with skip_special_tokens).
PLAIN_ADDED_TOKENS: tuple[str, ...] = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
)

# The rendering of Qwen3-VL-Instruct's official chat template (no default system prompt; images and videos
# as <|vision_start|><|image_pad|><|vision_end|>; optional "Picture N: " labels; tool calls and responses).
CHAT_TEMPLATE = r"""{%- macro render(content) -%}
{%- if content is string -%}{{- content -}}
{%- else -%}
{%- for item in content -%}
{%- if item.type == 'image' or 'image' in item or 'image_url' in item -%}
{%- set image_count.value = image_count.value + 1 -%}
{%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}
<|vision_start|><|image_pad|><|vision_end|>
{%- elif item.type == 'video' or 'video' in item -%}
{%- set video_count.value = video_count.value + 1 -%}
{%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}
<|vision_start|><|video_pad|><|vision_end|>
{%- elif 'text' in item -%}{{- item.text -}}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- macro render_text(content) -%}
{%- if content is string -%}{{- content -}}
{%- else -%}{%- for item in content -%}{%- if 'text' in item -%}{{- item.text -}}{%- endif -%}{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- set image_count = namespace(value=0) -%}
{%- set video_count = namespace(value=0) -%}
{%- if tools -%}
{{- '<|im_start|>system\n' -}}
{%- if messages[0].role == 'system' -%}{{- render_text(messages[0].content) + '\n\n' -}}{%- endif -%}
{{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" -}}
{{- "You are provided with function signatures within <tools></tools> XML tags:\n<tools>" -}}
{%- for tool in tools -%}{{- "\n" -}}{{- tool | tojson -}}{%- endfor -%}
{{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments " -}}
{{- "within <tool_call></tool_call> XML tags:\n<tool_call>\n" -}}
{{- "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" -}}
{%- elif messages[0].role == 'system' -%}
{{- '<|im_start|>system\n' + render_text(messages[0].content) + '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'user' -%}
{{- '<|im_start|>user\n' + render(message.content) + '<|im_end|>\n' -}}
{%- elif message.role == 'assistant' -%}
{{- '<|im_start|>assistant\n' + render_text(message.content) -}}
{%- if message.tool_calls -%}
{%- for tool_call in message.tool_calls -%}
{%- if (loop.first and message.content) or (not loop.first) -%}{{- '\n' -}}{%- endif -%}
{%- if tool_call.function -%}{%- set tool_call = tool_call.function -%}{%- endif -%}
{{- '<tool_call>\n{"name": "' + tool_call.name + '", "arguments": ' -}}
{%- if tool_call.arguments is string -%}{{- tool_call.arguments -}}
{%- else -%}{{- tool_call.arguments | tojson -}}{%- endif -%}
{{- '}\n</tool_call>' -}}
{%- endfor -%}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- elif message.role == 'tool' -%}
{%- if loop.first or (messages[loop.index0 - 1].role != 'tool') -%}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\n<tool_response>\n' + render(message.content) + '\n</tool_response>' -}}
{%- if loop.last or (messages[loop.index0 + 1].role != 'tool') -%}{{- '<|im_end|>\n' -}}{%- endif -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
"""

# Words the tiny tokenizer should know as whole tokens, so decoded nonsense looks like this project's domain.
_DOMAIN_WORDS = (
    "dimples cleavage facets intergranular fracture transgranular fatigue striations beach marks ratchet "
    "river patterns tear ridges microvoid coalescence ductile brittle quasi-cleavage secondary cracks "
    "inclusions porosity shear lips chevron marks rub marks oxidation corrosion "
    "ptychography phase amplitude artifacts phase wrapping raster grid pathology probe mismatch "
    "position errors incomplete convergence noise amplification partial coherence stitching ringing "
    "streaking low contrast overfitting vignetting drift background reconstruction good quality "
    "material steel aluminium titanium alloy sample magnification notes image SEM fractograph "
    "label labels confidence bbox_2d advice region of interest the a is in with and none unknown"
)
_JSON_LINES = (
    '{"labels": [{"label": "dimples", "confidence": 0.8, "bbox_2d": [12, 34, 560, 780]}], "advice": []}',
    '{"labels": [{"label": "cleavage facets", "confidence": 0.55}, {"label": "fatigue striations"}]}',
    '{"labels": [], "advice": ["increase overlap", "refine probe positions"]}',
    "```json\n[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 100, 250, 500, 750, 999, 1000]\n```",
)


def _corpus() -> list[str]:
    """Training text: domain words, JSON answers, and the shipped vocabulary files when present."""
    lines = [_DOMAIN_WORDS, *_JSON_LINES, "You are an expert. Answer in JSON only.\n"]
    try:
        for entry in sorted(resources.files("napari_fracto.vocabularies").iterdir(), key=lambda p: p.name):
            if entry.name.endswith(".toml"):
                lines.append(entry.read_text(encoding="utf-8"))
    except (ModuleNotFoundError, OSError):
        pass
    return lines * 4


def _train_tokenizer(vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE with Qwen2's pre-tokenizer, trained in milliseconds on `_corpus()`."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges


def build_tokenizer(vocab_size: int = 512):
    """A Qwen2Tokenizer with Qwen's special tokens and the Qwen3-VL chat template (no download)."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = _train_tokenizer(vocab_size)
    # Give the added tokens fixed ids right after the BPE vocabulary, in Qwen's order.
    for token in (*SPECIAL_TOKENS, *PLAIN_ADDED_TOKENS):
        vocab.setdefault(token, len(vocab))
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(SPECIAL_TOKENS[1:]),
        model_max_length=262144,
        errors="replace",
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in PLAIN_ADDED_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_config(tokenizer, *, hidden_size: int = 64):
    """A Qwen3VLConfig small enough to run in milliseconds on a CPU (vision: patch 16, merge 2)."""
    head_dim = 16
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": head_dim,
        "max_position_embeddings": 4096,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_interleaved": True,
            "mrope_section": [4, 2, 2],  # sums to head_dim / 2, like [24, 20, 20] for head_dim 128
        },
        "initializer_range": 0.2,  # large enough that outputs depend on the input
        "dtype": "float32",
    }
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": hidden_size,
        "num_position_embeddings": 256,
        "deepstack_visual_indexes": [1],
        "initializer_range": 0.2,
    }
    return qwen3vl_config(text, vision, tokenizer, tie_word_embeddings=False)


def qwen3vl_config(text: dict, vision: dict, tokenizer: Any, *, tie_word_embeddings: bool) -> Any:
    """A Qwen3VLConfig whose special-token ids are the tokenizer's (Qwen's chat and vision markers)."""
    from transformers import Qwen3VLConfig

    ids = tokenizer.convert_tokens_to_ids
    text = {
        **text,
        "tie_word_embeddings": tie_word_embeddings,
        "bos_token_id": ids("<|endoftext|>"),
        "eos_token_id": ids("<|im_end|>"),
        "pad_token_id": ids("<|endoftext|>"),
    }
    return Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=tie_word_embeddings,
    )


def _preprocessor_configs() -> tuple[dict, dict]:
    """The image and video preprocessor configs a Qwen3-VL repository ships (same keys and defaults)."""
    common = {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "processor_class": "Qwen3VLProcessor",
    }
    image = {
        **common,
        "size": {"shortest_edge": 65536, "longest_edge": 16777216},
        "image_processor_type": "Qwen2VLImageProcessorFast",
    }
    video = {
        **common,
        "size": {"shortest_edge": 4096, "longest_edge": 25165824},
        "fps": 2,
        "min_frames": 4,
        "max_frames": 768,
        "do_sample_frames": True,
        "video_processor_type": "Qwen3VLVideoProcessor",
    }
    return image, video


def build_tiny_vlm(out_dir: str | Path, *, seed: int = 0, hidden_size: int = 64) -> Path:
    """Write a random tiny Qwen3-VL model directory to `out_dir` and return its path.

    The directory holds what a Hub download of Qwen3-VL-*-Instruct holds, so it loads through
    `AutoModelForImageTextToText.from_pretrained(out_dir)` and the project's processor loader. The same seed
    gives the same weights; `hidden_size` exists so tests can make an incompatible base model.
    """
    import torch
    from transformers import GenerationConfig, Qwen3VLForConditionalGeneration

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file; give a directory to write the tiny model into.")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = tiny_config(tokenizer, hidden_size=hidden_size)
    config.architectures = ["Qwen3VLForConditionalGeneration"]

    torch.manual_seed(seed)
    with torch.device("cpu"):
        model = Qwen3VLForConditionalGeneration(config).eval()
    # The official generation config samples; callers wanting greedy output must ask for it.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=[tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")],
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        do_sample=True,
        temperature=0.7,
        top_k=20,
        top_p=0.8,
        repetition_penalty=1.0,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)

    image_cfg, video_cfg = _preprocessor_configs()
    (out / "preprocessor_config.json").write_text(json.dumps(image_cfg, indent=2) + "\n")
    (out / "video_preprocessor_config.json").write_text(json.dumps(video_cfg, indent=2) + "\n")
    (out / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2) + "\n")
    # Like the Hub repo: the template in tokenizer_config.json and chat_template.json, no .jinja file.
    (out / "chat_template.jinja").unlink(missing_ok=True)
    tok_cfg_path = out / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg["chat_template"] = CHAT_TEMPLATE
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: build the tiny model into OUT_DIR and list the files written."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m napari_fracto.testing.tiny_vlm",
        description="Write a random tiny Qwen3-VL model directory for offline tests.",
    )
    parser.add_argument("out_dir", help="directory to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the weights (default 0)")
    args = parser.parse_args(argv)

    target = Path(args.out_dir)
    if target.exists() and not target.is_dir():
        print(f"error: {target} is a file; give a directory to write the model into.", file=sys.stderr)
        return 2
    try:
        out = build_tiny_vlm(target, seed=args.seed)
    except OSError as exc:
        print(f"error: cannot write the model to {target}: {exc}", file=sys.stderr)
        return 2
    print(f"Tiny Qwen3-VL written to {out}:")
    for path in sorted(p for p in out.iterdir() if p.is_file()):
        print(f"  {path.name:32s} {path.stat().st_size:>10,d} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
