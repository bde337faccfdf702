"""Reads a mixforge GGUF export with the `gguf` package (llama.cpp's own reader) and checks it
against the HF export of the same quantized checkpoint (its fake-quantized weights): every
matrix dequantized by gguf equals them bit for bit (Q/K rows in llama.cpp's interleaved RoPE
order), quantized matrices are Q4_0, and the llama metadata describes the model.

usage: gguf_check.py MODEL.gguf HF_EXPORT_DIR   (prints one JSON line; exits 1 on a mismatch)
"""
import json
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import load_file

path, hf = sys.argv[1], sys.argv[2]
config = json.load(open(f"{hf}/config.json"))
expected = load_file(f"{hf}/model.safetensors")
reader = GGUFReader(path)


def field(name):
    f = reader.fields[name]
    value = f.parts[f.data[0]]
    return bytes(value).decode() if f.types[0].name == "STRING" else value.tolist()[0]


def permute(w, heads):
    # convert_hf_to_gguf's LlamaModel.permute
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


renames = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def hf_name(name):
    if name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if name == "output_norm.weight":
        return "model.norm.weight"
    if name == "output.weight":
        return "lm_head.weight"
    _, layer, module, _ = name.split(".")
    hf_module = next(h for h, g in renames.items() if g == module)
    return f"model.layers.{layer}.{hf_module}.weight"


problems = []
counts = {"Q4_0": 0, "F32": 0}
for t in reader.tensors:
    name = hf_name(t.name)
    want = expected.pop(name)
    if name.endswith("q_proj.weight"):
        want = permute(want, config["num_attention_heads"])
    if name.endswith("k_proj.weight"):
        want = permute(want, config["num_key_value_heads"])
    got = dequantize(t.data, t.tensor_type).reshape(want.shape)
    counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    if want.ndim == 2 and t.tensor_type != GGMLQuantizationType.Q4_0:
        problems.append(f"{t.name} is {t.tensor_type.name}, not Q4_0")
    if not np.array_equal(got.astype(np.float32).view(np.uint32), want.astype(np.float32).view(np.uint32)):
        problems.append(f"{t.name}: max difference {np.abs(got - want).max()}")
if expected:
    problems.append(f"missing from the GGUF: {sorted(expected)}")
meta = {
    "architecture": field("general.architecture"),
    "block_count": field("llama.block_count"),
    "embedding_length": field("llama.embedding_length"),
    "head_count": field("llama.attention.head_count"),
    "head_count_kv": field("llama.attention.head_count_kv"),
    "tokens": len(reader.fields["tokenizer.ggml.tokens"].data),
}
want_meta = {
    "architecture": "llama",
    "block_count": config["num_hidden_layers"],
    "embedding_length": config["hidden_size"],
    "head_count": config["num_attention_heads"],
    "head_count_kv": config["num_key_value_heads"],
    "tokens": config["vocab_size"],
}
if meta != want_meta:
    problems.append(f"metadata {meta} != {want_meta}")
print(json.dumps({"tensors": counts, "meta": meta, "problems": problems}))
sys.exit(1 if problems else 0)
