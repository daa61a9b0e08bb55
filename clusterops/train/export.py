"""Export a training checkpoint as a transformers SmolLM3 directory: config.json + model.safetensors.

Our module names are transformers' (under `model.`), so the export is a copy; the tied head is not
written (transformers ties it). RoPE theta and the NoPE layers are written explicitly, in both the
rope_theta (transformers 4.x) and rope_parameters (5.x) spellings.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from clusterops.errors import UsageError
from clusterops.train import checkpoint as ckpt
from clusterops.train.model import ModelConfig, Transformer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hf_config(cfg: ModelConfig, dtype: str = "float32") -> dict:
    no_rope_layers = [int(cfg.uses_rope(i)) for i in range(cfg.n_layers)]
    return {
        "architectures": ["SmolLM3ForCausalLM"],
        "model_type": "smollm3",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "initializer_range": cfg.init_std,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "no_rope_layers": no_rope_layers,
        "no_rope_layer_interval": cfg.nope_interval if cfg.nope_interval > 0 else cfg.n_layers + 1,
        "use_sliding_window": False,
        "sliding_window": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
        "torch_dtype": dtype,
        "use_cache": True,
    }


def hf_state_dict(model: Transformer, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {
        f"model.{name}": t.detach().to("cpu", dtype).contiguous()
        for name, t in model.state_dict().items()
        if not name.startswith("lm_head.")
    }


def export_hf(
    step_dir: str | os.PathLike[str], out: str | os.PathLike[str], dtype: str = "float32", force: bool = False
) -> Path:
    """Write OUT/config.json and OUT/model.safetensors from a committed step dir; OUT appears whole or
    not at all (written under a temp name, then renamed)."""
    from safetensors.torch import save_file

    if dtype not in DTYPES:
        raise UsageError(f"--dtype {dtype}: must be one of {', '.join(DTYPES)}")
    step_dir, out = Path(step_dir), Path(out)
    if not step_dir.is_dir():
        raise UsageError(f"{step_dir}: no such checkpoint directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise UsageError(f"{out}: exists and is not empty (use --force to replace it)")
    try:
        state = ckpt.read_train_state(step_dir)
        cfg = ModelConfig.from_dict(state["model"])
    except (ValueError, KeyError) as e:
        raise UsageError(f"{step_dir}: {e}") from None
    model = Transformer(cfg)
    try:
        ckpt.load(step_dir, model, None, restore_rng=False)
    except ValueError as e:
        raise UsageError(str(e)) from None
    tmp = out.with_name(f".{out.name}.export-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(hf_state_dict(model, DTYPES[dtype]), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(hf_config(cfg, dtype), indent=2) + "\n")
    gen = {
        "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id,
        "pad_token_id": cfg.pad_token_id,
    }
    (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)
    return out
