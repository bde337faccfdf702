"""Loads a mixforge export with transformers (no custom code) and writes, for the Rust test:
the token ids and fp32 logits of a real text, and the accuracy of task files scored directly
with the same lm-evaluation-harness procedure (log-likelihood of " " + choice after the query).

usage: hf_check.py EXPORT_DIR TEXT_FILE OUT_DIR TASK.jsonl...
"""
import json
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

export, text_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
tasks = sys.argv[4:]
torch.set_num_threads(2)
model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)
model.eval()
tok = PreTrainedTokenizerFast(tokenizer_file=f"{export}/tokenizer.json")
eos = model.config.eos_token_id

text = open(text_file, encoding="utf-8").read()
ids = tok(text, add_special_tokens=False)["input_ids"][:160]
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0].float()
save_file({"ids": torch.tensor(ids, dtype=torch.int64), "logits": logits.contiguous()}, f"{out}/hf_logits.safetensors")


def enc(s):
    return tok(s, add_special_tokens=False)["input_ids"]


def loglikelihood(context, continuation):
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole = enc(context + continuation)
    ctx = enc(context) if context else []
    target = whole[len(ctx):]
    prefix = whole[: len(ctx)] or [eos]
    inp = (prefix + target)[-(model.config.max_position_embeddings + 1):]
    with torch.no_grad():
        logp = model(torch.tensor([inp[:-1]])).logits[0, -len(target):].float().log_softmax(-1)
    return logp.gather(1, torch.tensor(target).unsqueeze(1)).sum().item()


scores = {}
for path in tasks:
    name = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    items = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    hits = hits_norm = 0
    for it in items:
        lls = [loglikelihood(it["query"], " " + c) for c in it["choices"]]
        norm = [ll / max(len(c), 1) for ll, c in zip(lls, it["choices"])]
        hits += int(max(range(len(lls)), key=lambda i: (lls[i], -i)) == it["gold"])
        hits_norm += int(max(range(len(norm)), key=lambda i: (norm[i], -i)) == it["gold"])
    scores[name] = {"acc": hits / len(items), "acc_norm": hits_norm / len(items), "items": len(items)}
json.dump({"architectures": model.config.architectures, "tasks": scores}, open(f"{out}/hf_scores.json", "w"))
