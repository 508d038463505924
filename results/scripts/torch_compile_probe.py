"""Why did torch.compile fp16 BERT-large run 2x slower than eager in experiments.latency? Times one variant per
process (CUDA events, 20 calls after 3 warm-up) and prints its heaviest kernels (torch.profiler). Run on the GPU:

    for v in eager compile compile_mask compile_inner; do timeout 150 python3 results/scripts/torch_compile_probe.py $v; done

Outcome on the H200 (be15620's parent, results/latency/torch_compile_probe.md): without an attention mask the
compiled model runs an fp32 math softmax and TF32 GEMMs; with an all-ones mask it keeps cuDNN flash attention."""
import sys
import time

import torch
import transformers
from torch.profiler import ProfilerActivity, profile

# TF32 allowed here (experiments.latency leaves it off): the fp32 GEMMs of the unmasked compiled graph then run on
# TF32 tensor cores, so this probe's 37 ms is a lower bound of the harness' 51.7 ms for the same graph.
torch.backends.cuda.matmul.allow_tf32 = True
L, H, I, NH = (24, 1024, 4096, 16)
B, S = 32, 512
cfg = transformers.BertConfig(vocab_size=30522, hidden_size=H, num_hidden_layers=L, num_attention_heads=NH,
                              intermediate_size=I, attn_implementation="sdpa")
m = transformers.BertModel(cfg, add_pooling_layer=False).eval().half().cuda()
ids = torch.randint(0, 30522, (B, S), device="cuda")
mask = torch.ones_like(ids)
print(torch.__version__, transformers.__version__, flush=True)


def bench(name, fn, n=20):
  with torch.inference_mode():
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    for _ in range(3):
      fn()
    torch.cuda.synchronize()
    st, en = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    st.record()
    for _ in range(n):
      fn()
    en.record()
    torch.cuda.synchronize()
    ms = st.elapsed_time(en) / n
    with profile(activities=[ProfilerActivity.CUDA]) as p:
      for _ in range(3):
        fn()
      torch.cuda.synchronize()
  print(f"== {name}: {ms:.3f} ms (first {first:.1f} s)", flush=True)
  print(p.key_averages().table(sort_by="cuda_time_total", row_limit=8, max_name_column_width=90), flush=True)


which = sys.argv[1]
if which == "eager":
  bench("eager", lambda: m(input_ids=ids).last_hidden_state)
elif which == "eager_mask":
  bench("eager mask", lambda: m(input_ids=ids, attention_mask=mask).last_hidden_state)
elif which == "compile":
  c = torch.compile(m)
  bench("compile", lambda: c(input_ids=ids).last_hidden_state)
elif which == "compile_mask":
  c = torch.compile(m)
  bench("compile mask", lambda: c(input_ids=ids, attention_mask=mask).last_hidden_state)
elif which == "compile_inner":   # static shapes: not the cause either
  c = torch.compile(m, dynamic=False)
  bench("compile dynamic=False", lambda: c(input_ids=ids).last_hidden_state)
