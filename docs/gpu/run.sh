#!/usr/bin/env bash
# The GPU smoke run of docs/gpu/, on an air-gapped machine with one Hopper GPU (the `device` tool's
# nvidia-h100-x1/nvidia-h200: Python 3.12 at /opt/torch/.venv with torch 2.11.0+cu130, no registry).
#
# Made here:  farm bundle 0.26.0 --python 3.12 --platform manylinux_2_31_x86_64 \
#                 --against device-freeze.txt --out /work/bundle-0.26.0c --split 52MiB
# Each part (52 MiB: the call carries the repository too, ~9.5 MB) travels in its own call into the repo's ignored .carry/ folder; then
#   docs/gpu/run.sh stage .carry/pN   (once per part: keeps it in /root/bundle)
#   docs/gpu/run.sh start     (verify + unpack, zoo build, `farm run` in the background)
#   docs/gpu/run.sh wait      (until the run ends; its store, matrix, page and logs into $OUT)
# or, for the packing and compile-cache benchmarks (bench/gpu.py) instead of `start`:
#   docs/gpu/run.sh bench [STEP …]  (verify + unpack, zoo build, bench/gpu.py's steps in the background:
#                             warm packed serial compare overrun compile unless named; BENCH_BUNDLE=DIR: the
#                             bundle in DIR instead of /root/bundle, e.g. one a history job carried in;
#                             BENCH_ARGS="--share 0.0625 --num-cpus 1": given to every step)
#   docs/gpu/run.sh wait      (until they end; bench.tar.gz: their JSON and logs; bench-store.tar.gz: their store)
# or, for the CUDA version history (jobs/gpu_history.yaml: four releases, one bundle each):
#   docs/gpu/run.sh stage-tree .carry/load-N   (.carry/load-N/<release>/<files>: what fits in call N, parts of
#                             several bundles too, into /root/bundles/<release>/; `python3 docs/gpu/carry.py
#                             plan DIR…` here plans the calls and fills every .carry/load-N before the first)
#   docs/gpu/run.sh zoo JOB   (instead of `warm` while `bench` runs: JOB's zoo on the site bench unpacked)
#   docs/gpu/run.sh warm [JOB BUNDLE_DIR]   (once 0.26.0's bundle is complete: unpack the farm's site and build the zoo in
#                             the background while the other bundles' parts arrive)
#   docs/gpu/run.sh history [JOB BUNDLE_DIR RUN_ID]   (once every bundle is there: `farm run` in the background)
#   docs/gpu/run.sh wait [SECONDS]   (as for `start`: store, matrix, page, logs; a run still going is left
#                             going, and what it has written so far comes back)
#   docs/gpu/run.sh resume RESULTS_TGZ [RUN_ID JOB BUNDLE_DIR]   (a later lease: the run an earlier lease cut short,
#                             from the results.tar.gz its `wait` brought back, carried in: `farm run --resume`)
set -euo pipefail
PY=/opt/torch/.venv/bin/python
BUNDLE=/root/bundle
SRC=/root/farm-src
STORE=/root/results
# What `start` or `history` launched, for `wait`: the job's run id.
RUN_ID=$(cat /root/run-id 2>/dev/null || echo gpu-smoke-1)

prepare() {  # JOB [BUNDLE_DIR]: the farm's own site from that bundle (default /root/bundle), the job's zoo
    local job=$1 bundle=${2:-$BUNDLE}
    local SITE=/root/farm-site
    # The farm's code as it was sent, out of the synced repo copy (later calls replace that copy).
    rm -rf "$SRC" && mkdir -p "$SRC" && cp -r farm jobs dashboards bench pyproject.toml "$SRC"/
    rm -rf "$SITE"
    $PY "$bundle/unpack.py" unpack "$bundle/bundle.json" --into "$SITE"
    export PYTHONPATH="$SITE/site:$SRC" VLLM_USE_FLASHINFER_SAMPLER=0
    cd "$SRC"
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
        $PY -c "import platform, torch, vllm, ray, transformers; print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda, 'vllm', vllm.__version__, 'ray', ray.__version__, 'transformers', transformers.__version__)"
        uname -r; nproc; ldd --version | sed -n 1p
    } > /root/facts.txt 2>&1
    cat /root/facts.txt
    time $PY -m farm zoo build --for-job "$job"
}

launch() {  # RUN_ID FARM_RUN_ARGS…: `farm run` in its own session: it outlives this call, and `wait` collects it
    echo "$1" > /root/run-id
    setsid nohup bash -c "time $PY -m farm run ${*:2} --store $STORE; echo \"exit \$?\"" \
        > /root/run.log 2>&1 < /dev/null &
    sleep 30; tail -5 /root/run.log
}

warmed() {  # JOB BUNDLE_DIR: wait for `warm`'s preparation, or prepare now; then in the farm's copy with its site
    while [ ! -f /root/prepare.done ] && pgrep -f "run-warm.sh prepare-now" > /dev/null; do sleep 5; done
    # No log when `warm` never ran (`history` prepares itself): under pipefail a failing cat would end the script.
    if [ -f /root/prepare.log ]; then tail -5 /root/prepare.log; fi
    if [ -f /root/prepare.done ]; then
        export PYTHONPATH="/root/farm-site/site:$SRC" VLLM_USE_FLASHINFER_SAMPLER=0 && cd "$SRC"
    else
        prepare "$1" "$2"
    fi
}

case "${1:-}" in
stage)
    into=${3:-$BUNDLE}
    mkdir -p "$into"
    cp -v "${2:?which carried folder}"/* "$into"/
    ls -l "$into"
    ;;
stage-tree)
    for dir in "${2:?which carried folder}"/*/; do
        into=/root/bundles/$(basename "$dir")
        mkdir -p "$into" && cp -v "$dir"* "$into"/
    done
    ;;
warm)
    # A copy of this script: later calls replace the synced repo copy under a running bash.
    cp "$0" /root/run-warm.sh
    setsid nohup bash /root/run-warm.sh prepare-now "${2:-jobs/gpu_history.yaml}" "${3:-/root/bundles/0.26.0}" \
        > /root/prepare.log 2>&1 < /dev/null &
    sleep 20; tail -3 /root/prepare.log
    ;;
prepare-now)
    prepare "$2" "$3" && touch /root/prepare.done
    ;;
zoo)
    # While `bench` runs: another job's zoo on the farm site `bench` already unpacked (any bundle's site runs the
    # farm), so its `history` that follows needs no preparation of its own (`warm` would replace that site mid-bench).
    export PYTHONPATH="/root/farm-site/site:$SRC" && cd "$SRC"
    cp "$OLDPWD/${2:?which job}" "$SRC/$2"
    time $PY -m farm zoo build --for-job "$2" && touch /root/prepare.done
    ;;
start)
    prepare jobs/gpu_smoke.yaml
    launch gpu-smoke-1 jobs/gpu_smoke.yaml --run-id gpu-smoke-1
    ;;
history)
    warmed "${2:-jobs/gpu_history.yaml}" "${3:-/root/bundles/0.26.0}"
    launch "${4:-gpu-history-1}" "${2:-jobs/gpu_history.yaml}" --run-id "${4:-gpu-history-1}"
    ;;
resume)
    # A run an earlier lease cut short (its store as `wait` brought it back, carried in): the cells without a
    # verdict run here, those of bundles that lease lacked included.
    mkdir -p "$STORE" && tar -C "$STORE" -xzf "${2:?the results.tar.gz of an earlier lease}"
    warmed "${4:-jobs/gpu_history.yaml}" "${5:-/root/bundles/0.26.0}"
    launch "${3:-gpu-history-1}" --resume "${3:-gpu-history-1}"
    ;;
bench)
    # BENCH_BUNDLE=/root/bundles/0.24.0 benches a bundle another job already carried in (no more loads): the smoke
    # job's engine is renamed after the release that bundle holds.
    bundle=${BENCH_BUNDLE:-$BUNDLE}
    version=$($PY -c 'import json, sys; print(json.load(open(sys.argv[1]))["vllm"])' "$bundle/bundle.json")
    job=/root/bench-job.yaml
    sed -e "s|{name: v[0-9.]*, kind: bundle, path: /root/bundle/|{name: v$version, kind: bundle, path: $bundle/|" \
        jobs/gpu_smoke.yaml > "$job"
    grep -q "name: v$version, kind: bundle, path: $bundle/bundle.json" "$job"
    prepare "$job" "$bundle"
    B=/root/bench
    rm -rf "$B" && mkdir -p "$B"
    # Every cell once (a node's first use of each architecture out of both timings), packed (the one-at-a-time run
    # then finds whatever is left warm: tilted against packing), then one cell at a time and the comparison (the
    # issue's number), then the real engine that overruns its share and the compile cache (two builds with
    # compilation on): what a lease cuts short, `wait` collects as far as it got.
    steps="${*:2}"
    setsid nohup bash -c "for what in ${steps:-warm packed serial compare overrun compile}; do time $PY -m bench.gpu \$what --job $job --out $B ${BENCH_ARGS:-}; done; \
        echo \"exit \$?\"" > /root/run.log 2>&1 < /dev/null &
    sleep 30; tail -5 /root/run.log
    ;;
wait)
    # Nothing launched (a `history` or `bench` that failed before its launch): say so now instead of sleeping the
    # whole wait on device time.
    [ -f /root/run.log ] || { echo "wait: no /root/run.log: nothing was launched on this machine" >&2; exit 1; }
    deadline=$(( $(date +%s) + ${2:-540} ))
    while ! grep -q "^exit " /root/run.log && [ "$(date +%s)" -lt "$deadline" ]; do sleep 10; done
    tail -40 /root/run.log
    cp /root/run.log /root/facts.txt "$OUT"/
    if [ -d "$STORE" ]; then
        tar -C "$STORE" -czf "$OUT/results.tar.gz" .
        cp "$STORE/matrix/$RUN_ID.json" "$OUT/matrix.json" 2>/dev/null || true
        cp "$STORE/index.html" "$OUT/index.html" 2>/dev/null || true
    fi
    tar -C /root/.cache/farm -czf "$OUT/cell-logs.tar.gz" cell-logs 2>/dev/null || true
    if [ -d /root/bench ]; then
        tar -C /root/bench -czf "$OUT/bench.tar.gz" --exclude=store . && tar -C /root/bench -czf "$OUT/bench-store.tar.gz" store
    fi
    ;;
*)
    echo "usage: docs/gpu/run.sh stage DIR [INTO] | stage-tree DIR | warm | zoo JOB | history | resume RESULTS_TGZ | start | bench [STEP …] | wait [SECONDS]" >&2; exit 2 ;;
esac
