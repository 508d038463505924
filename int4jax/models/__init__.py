"""Model families (BERT, GPT-2, BART) and Hugging Face checkpoint loading.

    from int4jax.models import load_pretrained, get_config, Taps
    model, params = load_pretrained("/path/to/hf_dir", policy=make_policy("w4a4"), task="sequence_classification")
"""
from int4jax.models.outputs import ModelOutput, Seq2SeqOutput, Taps
from int4jax.models.registry import FAMILIES, get_config, load_pretrained

__all__ = ["FAMILIES", "ModelOutput", "Seq2SeqOutput", "Taps", "get_config", "load_pretrained"]
