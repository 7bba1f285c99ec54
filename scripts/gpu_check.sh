#!/usr/bin/env bash
# One short, prepared GPU check (issues 22 and 18), for a session lent a GPU machine; ≤ 8 minutes in all.
#
#   bash scripts/gpu_check.sh            # on the GPU machine: everything under "${OUT:-gpu_out}"
#   bash scripts/gpu_check.sh --smoke    # here, on the CPU: every size shrunk, the same steps (< 3 minutes)
#
# Steps, each under its own `timeout` and all under one deadline, so one hang does not eat the budget:
#   1. graphs:  CUDA-graph plans equal the ordinary loop's (LeWM paper size, Push-T shapes, same seed; fp32 and bf16)
#   2. speed:   `python -m harness.bench speed` at paper size: plan ms/episode at 1 and 50 episodes per call,
#               fp32 / bf16 × CUDA graphs off / on; training windows/s at batch 128; peak GPU memory
#   3. plan:    one plan at the published CEM budget (300 samples × 30 iterations, top 30, horizon 5) on
#               Push-T's shapes (history 3), fp32 / bf16 × CUDA graphs off / on
#   4. collect: Push-T at 224 px, 40 episodes × 100 steps (`python -m tasks.collect`)
#   5. train:   LeWM paper size on that data for ~150 s (`python -m harness.bench data`): windows/s at batch 128,
#               the loader's share of step time, peak GPU and host memory
# Then a summary table (also $OUT/summary.txt). The machine has no internet: packages its python3 lacks (Push-T's
# gym-pusht, pymunk, pygame, shapely, gymnasium, cffi, ...) travel as wheels in .whl/ (docs/cluster.md says how);
# they are installed into /tmp/site first when present.
set -euo pipefail

SMOKE=0
[[ "${1:-}" == "--smoke" || "${GPU_CHECK_SMOKE:-0}" == "1" ]] && SMOKE=1
OUT="${OUT:-gpu_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

if [[ $SMOKE == 1 ]]; then  # every size shrunk: it checks the script, not the machine
  DEVICE=cpu BUDGET_S=170 SIZE=tiny IMAGE=64 ITERATIONS=2 SAMPLES=32 PRECISIONS=fp32 EPISODES_PER_CALL="1 3"
  TRAIN_BATCH=4 REPEATS=1
  COLLECT_EPISODES=4 COLLECT_STEPS=20 DATA_BATCH=8 TRAIN_SECONDS=5 WORKERS=1
  export WMBENCH_CACHE="${WMBENCH_CACHE:-/tmp/wmbench-gpu-check-smoke}"
else
  DEVICE=cuda BUDGET_S=470 SIZE=paper IMAGE=224 ITERATIONS=30 SAMPLES=300 PRECISIONS="fp32 bf16"
  EPISODES_PER_CALL="1 50" TRAIN_BATCH=128 REPEATS=3
  COLLECT_EPISODES=40 COLLECT_STEPS=100 DATA_BATCH=128 TRAIN_SECONDS=150 WORKERS=8
  export WMBENCH_CACHE="${WMBENCH_CACHE:-/tmp/wmbench-gpu-check}"  # not under $OUT: only results come back
fi
DEADLINE=$((SECONDS + BUDGET_S))
STEPS=()

# run_step NAME TIMEOUT_S COMMAND...: runs within min(TIMEOUT_S, what is left of the budget); never stops the script.
run_step() {
  local name=$1 limit=$2 left rc began
  shift 2
  left=$((DEADLINE - SECONDS))
  ((limit > left)) && limit=$left
  if ((limit < 10)); then
    STEPS+=("$name skipped 0")
    echo "=== $name: skipped, ${left}s of the budget left"
    return 0
  fi
  local shown=() arg
  for arg in "$@"; do  # an inline program is shown by its first line
    if [[ $arg == *$'\n'* ]]; then shown+=("'${arg%%$'\n'*}'"); else shown+=("$arg"); fi
  done
  echo "=== $name (timeout ${limit}s): ${shown[*]}"
  began=$SECONDS
  if timeout --kill-after=10 "$limit" "$@"; then rc=0; else rc=$?; fi
  local status=ok
  ((rc == 124 || rc == 137)) && status=timeout
  ((rc != 0 && rc != 124 && rc != 137)) && status="failed(rc=$rc)"
  STEPS+=("$name $status $((SECONDS - began))")
  echo "=== $name: $status in $((SECONDS - began))s"
}

echo "gpu_check: smoke=$SMOKE device=$DEVICE python=$PY out=$OUT cache=$WMBENCH_CACHE git=$(git rev-parse --short HEAD 2>/dev/null || echo none)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
"$PY" -c "import importlib.util as u; print('missing packages:', [m for m in ('einops', 'h5py', 'pyarrow', 'gymnasium',
  'gym_pusht', 'pymunk', 'pygame', 'shapely') if u.find_spec(m) is None] or 'none')"
if [[ $DEVICE == cuda ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "gpu_check: no CUDA device here; run with --smoke on a CPU" >&2
  exit 2
fi

GRAPHS_CHECK=$(cat <<'EOF'
"""CUDA-graph plans against the ordinary loop: same controller seed, same problems, plan for plan."""
import dataclasses, json, sys
import numpy as np, torch
from torch import nn
from harness.eval.cases import CaseView
from harness.eval.controllers import ModelController, Observation
from harness.eval.planners import PlannerConfig
from models.blocks.vit import ConditionedBlock
from models.registry import build_model
from tasks.base import task_class

device, size, out = sys.argv[1], sys.argv[2], sys.argv[3]
image, samples, iterations = map(int, sys.argv[4:7])
precisions = sys.argv[7].split()
task = task_class("pusht")  # its shapes only: the class imports without Push-T's packages
history, action_dim = task.default_history, task.action_dim * task.default_frameskip
torch.manual_seed(0)
model = build_model("lewm", size, image, action_dim, history=history).to(device).eval()
for module in model.modules():  # AdaLN-zero starts every gate at 0 (actions ignored): open them, so plans matter
    if isinstance(module, ConditionedBlock):
        nn.init.normal_(module.modulation[-1].weight, std=0.2)
planner = PlannerConfig(samples=samples, iterations=iterations, elites=min(30, samples), horizon=5, receding=5)

def problem(episodes, seed):
    rng = np.random.default_rng(seed)
    goals = rng.integers(0, 256, (episodes, image, image, 3), dtype=np.uint8)
    pixels = rng.integers(0, 256, (episodes, history, image, image, 3), dtype=np.uint8)
    past = rng.standard_normal((episodes, history - 1, action_dim)).astype(np.float32)
    return goals, Observation(pixels, past, steps_taken=0)

def plans(precision, graphs):
    config = dataclasses.replace(planner, precision=precision, cuda_graphs=graphs)
    controller = ModelController("lewm", model, config, seed=0, device=device)
    made = []
    for episodes, seed in ((2, 0), (2, 1), (3, 2)):  # new inputs at one shape, then a new shape
        goals, observation = problem(episodes, seed)
        controller.begin([CaseView(i, 100 * seed + i) for i in range(episodes)], goals)
        made += [controller.plan(observation), controller.plan(observation)]  # the second from a warm start
    return made, controller

figures = {}
for precision in precisions:
    ordinary, _ = plans(precision, False)
    graphed, controller = plans(precision, True)
    diff = max((a - b).abs().max().item() for a, b in zip(ordinary, graphed))
    figures[precision] = {"precision_ran": controller.precision, "cuda_graphs_ran": controller.cuda_graphs,
                          "captures": len(controller.optimizer.graphs), "plans": len(ordinary),
                          "identical": all(torch.equal(a, b) for a, b in zip(ordinary, graphed)), "max_abs_diff": diff}
    print(precision, figures[precision])
json.dump(figures, open(out, "w"), indent=1)
sys.exit(0 if figures["fp32"]["identical"] else 1)
EOF
)

run_step graphs 120 "$PY" -c "$GRAPHS_CHECK" "$DEVICE" "$SIZE" "$OUT/graphs_check.json" "$IMAGE" "$SAMPLES" \
  "$ITERATIONS" "$PRECISIONS"

# shellcheck disable=SC2086  # the sizes are word lists on purpose
run_step speed 200 "$PY" -m harness.bench speed --models lewm --sizes "$SIZE" --device "$DEVICE" \
  --precision $PRECISIONS --cuda-graphs off on --episodes-per-call $EPISODES_PER_CALL --train-batch "$TRAIN_BATCH" \
  --iterations "$ITERATIONS" --repeats "$REPEATS" --out "$OUT/speed.parquet"

run_step plan 100 "$PY" -m harness.bench speed --models lewm --sizes "$SIZE" --task pusht --image-size "$IMAGE" \
  --device "$DEVICE" --precision $PRECISIONS --cuda-graphs off on --episodes-per-call 1 --train-batch \
  --iterations "$ITERATIONS" --repeats 1 --out "$OUT/plan_pusht.parquet"

run_step collect 90 "$PY" -m tasks.collect pusht --episodes "$COLLECT_EPISODES" --steps "$COLLECT_STEPS" \
  --image-size "$IMAGE" --noise 0.3 --workers "$WORKERS" --quiet  # the data bench's key: expert, noise 0.3, seed 0

LEFT=$((DEADLINE - SECONDS - 60))  # what earlier steps left: the model's build, loader timing and start-up take ~60 s
((LEFT < TRAIN_SECONDS)) && TRAIN_SECONDS=$((LEFT > 5 ? LEFT : 5))
run_step train $((TRAIN_SECONDS + 90)) "$PY" -m harness.bench data --task pusht --image-size "$IMAGE" \
  --episodes "$COLLECT_EPISODES" --steps "$COLLECT_STEPS" --size "$SIZE" --device "$DEVICE" \
  --batch-size "$DATA_BATCH" --train-seconds "$TRAIN_SECONDS" --train-workers "$WORKERS" --loader 0 "$WORKERS" \
  --out "$OUT/data.json"

SUMMARY=$(cat <<'EOF'
"""The figures worth quoting, from what the steps wrote; a step that wrote nothing says so."""
import json, os, sys
out, steps = sys.argv[1], sys.argv[2:]
print(f"{'step':8} {'status':16} {'s':>5}")
for line in steps:
    name, status, seconds = line.split()
    print(f"{name:8} {status:16} {seconds:>5}")

def read(name):
    path = os.path.join(out, name)
    if not os.path.exists(path):
        print(f"\n{name}: not written")
        return None
    if name.endswith(".json"):
        return json.load(open(path))
    import pyarrow.parquet as pq
    return pq.read_table(path).to_pylist()

if (check := read("graphs_check.json")) is not None:
    print("\nCUDA graphs vs ordinary loop (same seed)")
    for precision, f in check.items():
        print(f"  {precision}: graphs ran {f['cuda_graphs_ran']}, {f['captures']} captures, {f['plans']} plans, "
              f"identical {f['identical']}, max |diff| {f['max_abs_diff']:.3g}")
for name, title in (("speed.parquet", "speed (Two-Room shapes, history 1)"),
                    ("plan_pusht.parquet", "one published-budget plan (Push-T shapes, history 3)")):
    if (rows := read(name)) is not None:
        print(f"\n{title}; published LeWM plan on a GPU: 980 ms")
        print(f"  {'what':6} {'batch':>5} {'prec':5} {'graphs':6} {'ms/call':>9} {'ms/episode':>10} {'windows/s':>9} "
              f"{'peak GPU MB':>11} {'first call s':>12}")
        for r in rows:
            graphs = {None: "", False: "off", True: "on"}[r["cuda_graphs"]]
            per_episode = "" if r["plan_ms_per_episode"] is None else f"{r['plan_ms_per_episode']:,.1f}"
            windows = "" if r["windows_per_s"] is None else f"{r['windows_per_s']:,.0f}"
            gpu = "" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:,.0f}"
            print(f"  {r['measurement']:6} {r['batch']:>5} {r['precision']:5} {graphs:6} {r['call_ms_median']:>9,.1f} "
                  f"{per_episode:>10} {windows:>9} {gpu:>11} {r['warmup_s']:>12.1f}")
if (data := read("data.json")) is not None:
    print("\nLeWM training on Push-T from the store")
    for f in data:
        loaders = ", ".join(f"{k.rsplit('_', 1)[1]} workers {v:,.0f}" for k, v in f.items() if k.startswith("windows_per_s_"))
        print(f"  {f['episodes']} episodes ({f['frames']} frames): {f['train_steps']} steps in {f['train_s']:.0f} s, "
              f"{f['train_windows_per_s']:,.1f} windows/s ({f['train_precision']}), loader share "
              f"{100 * f['loader_share']:.1f}%, peak GPU {f['peak_gpu_gb'] if 'peak_gpu_gb' in f else '-':.3} GB, peak host "
              f"{f['peak_rss_gb']:.1f} GB (+ workers {f.get('peak_rss_worker_gb', 0):.1f} GB); loader alone at batch "
              f"128: {loaders} windows/s")
EOF
)
echo
echo "=== summary ($((SECONDS))s in all; budget ${BUDGET_S}s)"
"$PY" -c "$SUMMARY" "$OUT" "${STEPS[@]}" | tee "$OUT/summary.txt"
