#!/usr/bin/env bash
# One prepared run for a lent H100/H200 (written without a GPU to try it on; every step is bounded and
# tolerant, so one failure still leaves the others' results). Finishes in under 8 minutes.
#
#   1. clusterops' trainer, smollm3-3b preset, seq 4096, bf16, torch.compile, activation checkpointing,
#      FlexAttention document masking, fused AdamW: tokens/s/GPU and MFU (SmolLM3: 13.5-14k tokens/s/GPU;
#      llm-foundry: 20,964 for a 3B model on H100). Falls back to no compile if the compiled run fails.
#   2. `clusterops health record $OUT/h100.json` and `clusterops health check --json`, where they exist.
#   3. `clusterops bench node --json --profile p5.48xlarge`: node acceptance figures against the H100 references.
#
# Results go under $OUT (the device tool fetches them); elsewhere under bench/results/gpu.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
BUDGET=450  # seconds for everything, leaving margin under 8 minutes
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
summary="$OUT/summary.txt"
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

note "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
note "torch: $($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0))' 2>&1 | tail -1)"

train() {  # train NAME TIMEOUT ARGS...
    local name=$1 limit=$2
    shift 2
    timeout --signal=TERM --kill-after=10 "$limit" \
        $PY bench/bench_train.py --gpu --out "$OUT/$name.json" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    note "$name: exit $rc after $(( $(date +%s) - START ))s total"
    [ -f "$OUT/$name.json" ] && $PY - "$OUT/$name.json" <<'PY' | tee -a "$summary"
import json, sys
r = json.load(open(sys.argv[1]))
t = r["tokens_per_s_per_gpu"]
print(f"  {r['device']}: {r['preset']} seq {r['seq_len']} compile={r['compile']} ac={r['activation_checkpointing']}: "
      f"{t['median']:.0f} tokens/s/GPU (min {t['min']:.0f}, max {t['max']:.0f}), MFU {r['mfu_median']*100:.1f}%, "
      f"max mem {r['max_mem_gib']:.1f} GiB, loss {r['loss_first_last'][0]:.3f}->{r['loss_first_last'][1]:.3f}")
PY
    return $rc
}

if ! train train_3b_compiled 330 --preset smollm3-3b --seq 4096 --steps 14 --skip 4; then
    if [ "$(left)" -gt 100 ]; then
        train train_3b_eager $(( $(left) - 70 )) --preset smollm3-3b --seq 4096 --steps 10 --skip 3 --no-compile
    fi
fi

# Variants that trade memory for speed (more tokens per step; no recomputation), while time allows.
if [ "$(left)" -gt 200 ]; then
    train train_3b_mb2 110 --preset smollm3-3b --seq 4096 --micro-batch 2 --steps 12 --skip 4
fi
if [ "$(left)" -gt 170 ]; then
    train train_3b_noac 110 --preset smollm3-3b --seq 4096 --steps 12 --skip 4 --no-ac
fi

# Node health on the real GPU with a one-GPU profile (the config's default profile expects none).
nvidia-smi -q >"$OUT/nvidia-smi-q.txt" 2>&1
if timeout 60 $PY -m clusterops health --help >/dev/null 2>&1; then
    timeout 60 $PY -m clusterops health record --profile bench/lent-gpu.toml "$OUT/gpu-node.json" >"$OUT/health_record.log" 2>&1
    note "health record: exit $?"
    timeout 60 $PY -m clusterops health check --profile bench/lent-gpu.toml --json >"$OUT/health_check.json" 2>>"$OUT/health_record.log"
    note "health check --json: exit $? ($($PY -c 'import json,sys; r=json.load(open(sys.argv[1])); print(", ".join(c["name"]+"="+c["status"] for c in r["checks"]))' "$OUT/health_check.json" 2>&1))"
else
    note "health: no 'clusterops health' command in this checkout (or its CLI does not import here); skipped"
fi
# Node acceptance on the real GPU: BF16 matmul, HBM copy, H2D copy, NCCL all-reduce, NVMe (fio), CPU.
if [ "$(left)" -gt 60 ]; then
    mkdir -p "$OUT/bench-local"
    CLUSTEROPS_PATHS__LOCAL_ROOT="$OUT/bench-local" timeout $(( $(left) - 10 )) \
        $PY -m clusterops bench node --json --profile p5.48xlarge --seconds 3 --size-mib 256 \
        >"$OUT/bench_node.json" 2>"$OUT/bench_node.log"
    note "bench node: exit $? (verdict; figures in bench_node.json)"
    rm -rf "$OUT/bench-local"
fi
note "gpu.sh done in $(( $(date +%s) - START ))s"
# The device tool brings back at most 8 files: pack the details, keep the summary beside them.
if [ "$OUT" != bench/results/gpu ]; then
    (cd "$OUT" && tar czf gpu-results.tgz --exclude=gpu-results.tgz --exclude=summary.txt . && \
        find . -type f ! -name gpu-results.tgz ! -name summary.txt ! -name '*.json' -delete)
fi
