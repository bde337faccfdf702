"""Checks mixforge's chat template against transformers: for each conversation in CASES (JSON
list of {"messages", "ids", "prompt_ids"} computed by mixforge), `apply_chat_template` on the
exported tokenizer must give exactly `ids` (the whole conversation) and `prompt_ids` (all but
the last assistant turn, with the generation prompt). It also greedily generates a reply with
the exported model through transformers, so the export chats end to end.

usage: chat_check.py EXPORT_DIR CASES.json
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

export, cases_file = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(export)
assert tok.chat_template, "tokenizer_config.json has no chat_template"
cases = json.load(open(cases_file, encoding="utf-8"))
bad = 0
for k, case in enumerate(cases):
    messages = case["messages"]
    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=False)
    if list(ids) != case["ids"]:
        bad += 1
        print(f"case {k}: whole conversation differs\n  transformers {list(ids)}\n  mixforge     {case['ids']}")
    prompt = tok.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True, return_dict=False)
    if list(prompt) != case["prompt_ids"]:
        bad += 1
        print(f"case {k}: generation prompt differs\n  transformers {list(prompt)}\n  mixforge     {case['prompt_ids']}")
if bad:
    sys.exit(f"{bad} mismatches")

model = AutoModelForCausalLM.from_pretrained(export, dtype=torch.float32)
prompt = tok.apply_chat_template(cases[0]["messages"][:-1], add_generation_prompt=True, return_tensors="pt", return_dict=False)
# The export's generation_config.json stops at <|im_end|> on its own.
im_end = tok.convert_tokens_to_ids("<|im_end|>")
assert im_end in model.generation_config.eos_token_id, model.generation_config
out = model.generate(prompt, max_new_tokens=8, do_sample=False)
print(json.dumps({"cases": len(cases), "reply_ids": out[0, prompt.shape[1]:].tolist()}))
