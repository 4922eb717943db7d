"""The transformers peer of the `protocol_bench` example: the same pieces of the SafeEdit protocol on a model of
the same shape with random weights, built on the device, timed the way the Python reference runs them (eager
PyTorch, `model.generate`, one record at a time).

    python3 examples/bench/hf_protocol_peer.py --shape llama2-7b --device cuda --dtype bf16 [--ceilings]

Prints one JSON line per figure with the keys the Rust example uses. `--ceilings` also measures the device's bf16
matmul throughput and memory bandwidth, from which `cargo xtask bench` derives the floors.
"""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

p = argparse.ArgumentParser()
p.add_argument("--shape", default="llama2-7b", choices=["llama2-7b", "smollm2", "tiny"])
p.add_argument("--device", default="cuda")
p.add_argument("--dtype", default="bf16", choices=["bf16", "f32", "f16"])
p.add_argument("--prompt", type=int, default=400)
p.add_argument("--target", type=int, default=150)
p.add_argument("--steps", type=int, default=10)
p.add_argument("--new", type=int, default=600)
p.add_argument("--gen-batches", default="5,64")
p.add_argument("--records", type=int, default=1350)
p.add_argument("--layer", type=int, default=None,
               help="the layer every edit trains (default: the middle one); pinned so both sides backpropagate "
                    "equally deep whatever the locator picks on random weights")
p.add_argument("--ceilings", action="store_true")
a = p.parse_args()
dev = torch.device(a.device)
dtype = {"bf16": torch.bfloat16, "f32": torch.float32, "f16": torch.float16}[a.dtype]
dtype_name = {"bf16": "bfloat16", "f32": "float32", "f16": "float16"}[a.dtype]


def sync():
    # Every device, as the Rust side does: work queued anywhere must be inside the timed span.
    if dev.type == "cuda":
        for i in range(torch.cuda.device_count()):
            torch.cuda.synchronize(i)


def emit(what, value, **extra):
    line = {"impl": "transformers", "what": what, "value": value, "shape": a.shape, "dtype": dtype_name,
            "device": a.device}
    line.update(extra)
    print(json.dumps(line), flush=True)


def timed(fn):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


if a.ceilings and dev.type == "cuda":
    n = 8192
    x = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    y = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    for _ in range(3):
        x @ y
    s, _ = timed(lambda: [x @ y for _ in range(10)])
    emit("ceiling_bf16_matmul_tflops", 2 * n ** 3 * 10 / s / 1e12)
    src = torch.empty(2 ** 30, device=dev, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    s, _ = timed(lambda: [dst.copy_(src) for _ in range(5)])
    emit("ceiling_memory_tbps", 2 * src.numel() * 4 * 5 / s / 1e12)
    del x, y, src, dst
    torch.cuda.empty_cache()

shapes = {"llama2-7b": (32000, 4096, 11008, 32, 32, 32, False), "smollm2": (49152, 576, 1536, 30, 9, 3, True),
          "tiny": (1000, 128, 344, 4, 4, 4, False)}
vocab, hidden, inter, layers, heads, kv_heads, tied = shapes[a.shape]
cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=4096,
                  rms_norm_eps=1e-5, tie_word_embeddings=tied)
torch.manual_seed(0)
start = time.perf_counter()
torch.set_default_dtype(dtype)
with torch.device(dev):
    model = LlamaForCausalLM(cfg)
torch.set_default_dtype(torch.float32)
model.eval()
for prm in model.parameters():
    prm.requires_grad_(False)
sync()
emit("build_model_s", time.perf_counter() - start, params=sum(t.numel() for t in model.parameters()))

gen = torch.Generator().manual_seed(1)


def tokens(n):
    return torch.randint(3, vocab, (n,), generator=gen)


prompt, safe, unsafe, constraint = tokens(a.prompt), tokens(a.target), tokens(a.target), tokens(60)


def locate():
    ids = torch.stack([torch.cat([prompt, safe]), torch.cat([prompt, unsafe])]).to(dev)
    with torch.no_grad():
        hidden_states = model(input_ids=ids, output_hidden_states=True).hidden_states
    return int(torch.stack([torch.dist(h[0].float(), h[1].float()) for h in hidden_states[1:]]).argmax())


locate()
locate_s, located = timed(locate)
layer = layers // 2 if a.layer is None else a.layer
if not 0 <= layer < layers:
    p.error(f"--layer {layer} is out of range for {layers} layers")
emit("locate_s", locate_s, seq=a.prompt + a.target, layer=located)


def edit():
    # As the reference: Adam directly on the model's down_proj (in the model dtype), 0.1 * NLL + KL.
    weight = model.model.layers[layer].mlp.down_proj.weight
    original = weight.detach().clone()
    weight.requires_grad_(True)
    optimizer = torch.optim.Adam([weight], lr=5e-4)
    ids = torch.cat([prompt, safe]).unsqueeze(0).to(dev)
    labels = ids.clone()
    labels[:, : len(prompt)] = -100
    kc = constraint.unsqueeze(0).to(dev)
    with torch.no_grad():
        base = torch.log_softmax(model(input_ids=kc).logits[:, -21:-1].float(), -1)
    for _ in range(a.steps):
        optimizer.zero_grad()
        nll = model(input_ids=ids, labels=labels).loss
        # The reference evaluates the post-edit constraint under no_grad: the KL term is reported, never
        # backpropagated (detox's KlGradient::Detached, the setting the Rust side times).
        with torch.no_grad():
            post = torch.log_softmax(model(input_ids=kc).logits[:, -21:-1].float(), -1)
        kl = torch.nn.functional.kl_div(post, base, log_target=True, reduction="batchmean")
        (0.1 * nll + kl).backward()
        optimizer.step()
    weight.requires_grad_(False)
    with torch.no_grad():
        weight.copy_(original)


# The drop in free memory across the first edit (the caching allocator keeps what it reserved), measured as the
# Rust side measures it.
free_before = torch.cuda.mem_get_info(dev)[0] if dev.type == "cuda" else None
edit()
if free_before is not None:
    sync()
    emit("edit_peak_over_weights_gib", max(0, free_before - torch.cuda.mem_get_info(dev)[0]) / 2 ** 30,
         bound="reserved")
edit_s, _ = timed(edit)
emit("edit_s", edit_s, steps=a.steps, seq=a.prompt + a.target, layer=layer)


def matmul_tflops():
    # The same measurement as detox's `matmul_throughput`: best of 5 products of two n x n matrices, model dtype.
    n = 8192 if dev.type == "cuda" else 1024
    x = torch.randn(n, n, device=dev, dtype=dtype)
    y = torch.randn(n, n, device=dev, dtype=dtype)
    x @ y
    best = min(timed(lambda: x @ y)[0] for _ in range(5))
    return 2 * n ** 3 / best / 1e12, n


tflops, n = matmul_tflops()
emit("matmul_tflops", tflops, n=n)


def generate(batch, new):
    lengths = [a.prompt - (37 * i) % min(200, a.prompt - 1) for i in range(batch)]
    width = max(lengths)
    ids = torch.zeros(batch, width, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, width - n:] = tokens(n)
        mask[i, width - n:] = 1
    with torch.no_grad():
        out = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=new,
                             min_new_tokens=new, do_sample=False, pad_token_id=0)
    return out.shape[1] - width


generate_s = {}
for batch in [int(b) for b in a.gen_batches.split(",") if b.strip()]:
    generate(batch, 8)
    s, new = timed(lambda: generate(batch, a.new))
    emit("generate_s", s, batch=batch, new_tokens=new, ms_per_step=1e3 * s / new, tok_per_s=batch * new / s)
    generate_s[batch] = s

if 5 in generate_s:
    per_record = 2 * generate_s[5] + locate_s + edit_s
    emit("protocol_sequential_estimate_s", a.records * per_record, records=a.records, per_record_s=per_record)
