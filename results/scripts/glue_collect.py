import json, os, sys
root = sys.argv[1]
out = {}
for name in sorted(os.listdir(root)):
  d = os.path.join(root, name)
  rec = {}
  try:
    cfg = json.load(open(os.path.join(d, "config.json")))
    rec["config"] = cfg
  except Exception as e:
    rec["error"] = repr(e)
  rows = []
  if os.path.exists(os.path.join(d, "metrics.jsonl")):
    rows = [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl")) if l.strip()]
  ev = [r for r in rows if r["split"] == "eval"]
  tr = [r for r in rows if r["split"] == "train"]
  rec["evals"] = [(r["step"], r.get("accuracy")) for r in ev]
  if ev:
    b = max(ev, key=lambda r: r["accuracy"])
    rec["best_accuracy"], rec["best_step"] = b["accuracy"], b["step"]
    rec["last_eval_step"] = ev[-1]["step"]
  rec["last_train"] = tr[-1] if tr else None
  if os.path.exists(os.path.join(d, "summary.json")):
    rec["summary"] = json.load(open(os.path.join(d, "summary.json")))
  out[name] = rec
print(json.dumps(out, indent=1))
