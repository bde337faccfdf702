"""Runs torchao's own QAT quantizer (Int8DynActInt4WeightQATQuantizer, group size 32, fp16
scales) on linear layers of several shapes and seeds, and writes for the Rust test what it
computes: the fake-quantized weights and activations, and the int codes and scales its convert()
stores.

usage: torchao_check.py OUT_DIR   (writes OUT_DIR/torchao.safetensors)
"""
import sys

import torch
from safetensors.torch import save_file
from torchao.quantization.qat import Int8DynActInt4WeightQATQuantizer

out = sys.argv[1]
tensors = {}
for case, (n, k) in enumerate([(16, 32), (48, 64), (7, 96), (300, 64), (5, 256)]):
    torch.manual_seed(case)
    # A spread of magnitudes per group, as trained weights have.
    scale = torch.randn(n, k // 8, 1).exp() * 0.02
    w = (torch.randn(n, k // 8, 8) * scale).reshape(n, k)
    x = torch.randn(3, 5, k) * (case + 0.5) + (case - 2) * 0.3
    model = torch.nn.Sequential(torch.nn.Linear(k, n, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(w)
    quantizer = Int8DynActInt4WeightQATQuantizer(groupsize=32, scales_precision=torch.float16)
    model = quantizer.prepare(model)
    lin = model[0]
    with torch.no_grad():
        tensors[f"{case}.w"] = w.contiguous()
        tensors[f"{case}.x"] = x.contiguous()
        tensors[f"{case}.weight_fq"] = lin.weight_fake_quantizer(lin.weight).contiguous()
        tensors[f"{case}.act_fq"] = lin.activation_fake_quantizer(x).contiguous()
    model = quantizer.convert(model)
    tensors[f"{case}.codes"] = model[0].weight.to(torch.int8).contiguous()
    tensors[f"{case}.scales"] = model[0].scales.float().contiguous()
save_file(tensors, f"{out}/torchao.safetensors")
