#!/usr/bin/env bash
# The GPU path, run for real: one prepared script for a machine with an NVIDIA GPU.
#
# Run from anywhere (it works in the repository root); every figure and log goes under $OUT:
#
#   bash bench/gpu_check.sh                          # on the GPU machine (DEVICE=cuda)
#   DEVICE=cpu QUICK=1 OUT=/tmp/gpucheck bash bench/gpu_check.sh   # a CPU dry run, a few minutes
#
# Steps (each with its own `timeout`, so one hang cannot eat the whole budget; a failed step is
# recorded in $OUT/summary.txt and the next one runs, except install and env, which stop it):
#
#   install     a fresh virtualenv, installed as the README says for a GPU user:
#               pip install -r requirements.txt, then pip install '.[test]' (torch==2.13.0 from
#               the index pip is configured with: on plain Linux PyPI the CUDA build). If pip
#               fails: $OUT/install_failed.txt says so and the script stops.
#   env         nvidia-smi and torch's view (cuda available, device name, torch and CUDA
#               versions) -> $OUT/env.txt; with DEVICE=cuda and no CUDA in torch it stops here.
#   tests       tests/test_cuda.py and tests/test_population.py (CUDA-parametrized), with
#               GSEARCH_REQUIRE_CUDA=1 when DEVICE=cuda (a missing device fails, never skips)
#               -> $OUT/tests.txt
#   population  bench/bench_population.py --device $DEVICE, K = 1,4,16,64,256, ms per
#               trial-epoch -> $OUT/population.txt (.json)
#   main        `gsearch run --trials 200 --device $DEVICE` in a fresh empty folder, timed
#               -> $OUT/main_run.txt, then
#   export      `gsearch export-best --device $DEVICE` there, timed -> $OUT/main_export.txt;
#               the study's counts and figures -> $OUT/main.txt, model.json -> $OUT/main_model.json
#   anytime     bench/bench_anytime.py --systems gsearch --budgets 30 --split-seeds 42,0,1
#               --device $DEVICE (`gsearch run --timeout 30`, then export-best) -> $OUT/anytime.txt
#
# At the end $OUT/figures.txt gathers every figure, and $OUT/summary.txt each step's exit status
# and seconds. The exit status is 0 only when every step passed.
#
# Environment:
#   DEVICE=cuda|cpu   the --device of every step (default cuda)
#   OUT=DIR           where the results go (default: a new folder under /tmp, printed)
#   QUICK=1           every size shrunk for a dry run: 12 trials, K = 1,4,16 for 3 epochs,
#                     --timeout 5 on split seed 42 only
#   VENV=DIR          use this existing virtualenv instead of making one (skips install), e.g.
#                     VENV=/work/main/.venv for a CPU dry run where a fresh install is too slow
#   VENV_DIR=DIR      where install makes its virtualenv (default /tmp/gsearch-gpu-venv; never
#                     under $OUT, whose files all come back). A virtualenv there that this
#                     script installed from the same requirements.txt is reused (a second call on
#                     a machine still warm); FRESH=1 makes it anew.
#   STEPS="..."       the steps to run, in order (default: all of the above). E.g. when the
#                     install eats too much of one 10-minute command: STEPS=install, then
#                     STEPS="env tests population main export anytime" in a second call.
#   T_INSTALL, T_ENV, T_TESTS, T_POPULATION, T_MAIN, T_EXPORT, T_ANYTIME
#                     per-step timeouts in seconds (default 300, 60, 150, 120, 240, 90, 200)
#   TRIALS, POPULATIONS, POP_EPOCHS, ANYTIME_BUDGET, ANYTIME_SEEDS   override a size
#
# Budget: the GPU machine gives about 10 minutes per command and 15 in all; the sum of the
# timeouts is longer than that, the expected run (install 1-3 min on a fast link) is not.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

export DEVICE="${DEVICE:-cuda}"
export QUICK="${QUICK:-0}"
OUT="${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}"
mkdir -p "$OUT"
export OUT="$(cd "$OUT" && pwd)"
STEPS="${STEPS:-install env tests population main export anytime}"
VENV="${VENV:-}"
VENV_DIR="${VENV_DIR:-/tmp/gsearch-gpu-venv}"
FRESH="${FRESH:-0}"
WORK="$(mktemp -d /tmp/gpu_check_work.XXXXXX)"   # scratch: the main job's folder; never under $OUT
export WORK

if [ "$QUICK" = 1 ]; then
  export TRIALS="${TRIALS:-12}" POPULATIONS="${POPULATIONS:-1,4,16}" POP_EPOCHS="${POP_EPOCHS:-3}"
  export ANYTIME_BUDGET="${ANYTIME_BUDGET:-5}" ANYTIME_SEEDS="${ANYTIME_SEEDS:-42}"
else
  export TRIALS="${TRIALS:-200}" POPULATIONS="${POPULATIONS:-1,4,16,64,256}" POP_EPOCHS="${POP_EPOCHS:-20}"
  export ANYTIME_BUDGET="${ANYTIME_BUDGET:-30}" ANYTIME_SEEDS="${ANYTIME_SEEDS:-42,0,1}"
fi
T_INSTALL="${T_INSTALL:-300}" T_ENV="${T_ENV:-60}" T_TESTS="${T_TESTS:-150}"
T_POPULATION="${T_POPULATION:-120}" T_MAIN="${T_MAIN:-240}" T_EXPORT="${T_EXPORT:-90}"
T_ANYTIME="${T_ANYTIME:-200}"
unset GSEARCH_STORAGE   # the main job uses a fresh studies.db in its own folder
SYS_PYTHON="$(command -v python3)"   # makes the virtualenv; resolved before PATH points into one
export SYS_PYTHON
# every step after install runs in this virtualenv: VENV, or the one install makes (or made)
if [ -n "$VENV" ]; then export VIRTUAL_ENV="$VENV"; else export VIRTUAL_ENV="$VENV_DIR"; fi
export PATH="$VIRTUAL_ENV/bin:$PATH"
export TQDM_DISABLE=1 PYTHONUNBUFFERED=1

echo "gpu_check: DEVICE=$DEVICE QUICK=$QUICK OUT=$OUT STEPS=\"$STEPS\"" | tee "$OUT/summary.txt"
failed=0

# run_step NAME TIMEOUT FUNCTION: FUNCTION's output into $OUT/NAME.log, status into summary.txt
run_step() {
  local name="$1" limit="$2" fn="$3" rc=0 t0 t1
  t0=$(date +%s.%N)
  echo "== $name (timeout ${limit} s) $(date -u +%H:%M:%S)" | tee -a "$OUT/summary.txt"
  timeout -k 10 "$limit" bash -c "$fn" >"$OUT/$name.log" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "   $name: TIMED OUT after ${limit} s (rc $rc); last lines of $name.log:" | tee -a "$OUT/summary.txt"
  elif [ "$rc" != 0 ]; then
    echo "   $name: FAILED (rc $rc) after $secs s; last lines of $name.log:" | tee -a "$OUT/summary.txt"
  else
    echo "   $name: ok in $secs s" | tee -a "$OUT/summary.txt"
  fi
  if [ "$rc" != 0 ]; then
    tail -n 15 "$OUT/$name.log" | sed 's/^/     | /' | tee -a "$OUT/summary.txt"
    failed=1
  fi
  return "$rc"
}

# -- the steps (each runs in its own bash under `timeout`) ----------------------------------

step_install() {
  set -euo pipefail
  local stamp="$VENV_DIR/.gsearch-gpu-check"
  local want
  want="$(sha256sum requirements.txt setup.cfg | sha256sum | cut -c1-16)"
  if [ "$FRESH" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "reusing $VENV_DIR (installed by this script from the same requirements.txt and setup.cfg)"
    "$VENV_DIR/bin/python" -m pip freeze >"$OUT/pip_freeze.txt"
    return 0
  fi
  rm -rf "$VENV_DIR"
  "$SYS_PYTHON" -m venv "$VENV_DIR"
  local pip="$VENV_DIR/bin/python -m pip"
  $pip --version
  echo "pip configuration:"; $pip config list || true
  # as the README says for a GPU user: requirements.txt (torch pinned; the CUDA build on plain
  # Linux PyPI), then the package; [test] adds pytest for the tests step
  $pip install --quiet --upgrade pip || echo "(pip upgrade failed; going on with $($pip --version))"
  if ! $pip install -r requirements.txt || ! $pip install '.[test]'; then
    {
      echo "pip install FAILED on $(hostname) at $(date -u): the package index is not reachable"
      echo "or a pin cannot be met; nothing after install ran. See install.log for pip's output."
      echo "python3: $SYS_PYTHON $("$SYS_PYTHON" --version 2>&1)"
      echo "a torch outside the virtualenv ($SYS_PYTHON -c 'import torch'):"
      "$SYS_PYTHON" -c 'import torch; print(" ", torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | sed 's/^/  /' || true
    } >"$OUT/install_failed.txt"
    cat "$OUT/install_failed.txt"
    return 1
  fi
  echo "$want" >"$stamp"
  $pip freeze >"$OUT/pip_freeze.txt"
}

step_env() {
  set -uo pipefail
  {
    echo "date: $(date -u)   host: $(hostname)   DEVICE=$DEVICE QUICK=$QUICK"
    echo "commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown) $(git -C "$ROOT" status --short 2>/dev/null | wc -l | tr -d ' ') file(s) changed"
    echo "python: $(command -v python) $(python --version 2>&1)"
    echo "CPU: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo
    echo "\$ nvidia-smi"
    if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi 2>&1; else echo "nvidia-smi: not found"; fi
    echo
    echo "\$ torch's view"
    python - <<'EOF'
import torch
print("torch", torch.__version__, "| built with CUDA", torch.version.cuda, "| cuDNN",
      torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
print("torch.cuda.is_available():", torch.cuda.is_available())
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        print(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}")
    print("matmul TF32:", torch.backends.cuda.matmul.allow_tf32, "| float32 matmul precision:",
          torch.get_float32_matmul_precision())
import gsearch
print("gsearch", gsearch.__version__, "from", gsearch.__file__)
EOF
  } >"$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"
  if [ "$DEVICE" = cuda ] && ! python -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "DEVICE=cuda but torch.cuda.is_available() is False: stopping (see env.txt)" | tee -a "$OUT/env.txt"
    return 1
  fi
}

step_tests() {
  set -uo pipefail
  local require=()
  [ "$DEVICE" = cuda ] && require=(env GSEARCH_REQUIRE_CUDA=1)
  "${require[@]}" python -m pytest -q -ra -p no:cacheprovider --durations=10 \
    tests/test_cuda.py tests/test_population.py 2>&1 | tee "$OUT/tests.txt"
}

step_population() {
  set -euo pipefail
  python bench/bench_population.py --device "$DEVICE" --populations "$POPULATIONS" \
    --epochs "$POP_EPOCHS" --json "$OUT/population.json" | tee "$OUT/population.txt"
}

step_main() {
  set -euo pipefail
  mkdir -p "$WORK/main" && cd "$WORK/main"
  local t0 t1
  t0=$(date +%s.%N)
  gsearch run --trials "$TRIALS" --device "$DEVICE" 2>&1 | tee "$OUT/main_run.txt"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "gsearch run --trials %s --device %s: %.1f s\n", ENVIRON["TRIALS"], ENVIRON["DEVICE"], b - a }' \
    | tee "$OUT/main_seconds.txt"
}

step_export() {
  set -euo pipefail
  cd "$WORK/main"
  local t0 t1
  t0=$(date +%s.%N)
  gsearch export-best --device "$DEVICE" 2>&1 | tee "$OUT/main_export.txt"
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "gsearch export-best --device %s: %.1f s\n", ENVIRON["DEVICE"], b - a }' \
    | tee -a "$OUT/main_seconds.txt"
  cp export/model.json "$OUT/main_model.json"
  python - <<'EOF' | tee "$OUT/main.txt"
import json, os
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
(name,) = optuna.get_all_study_names("sqlite:///studies.db")
study = optuna.load_study(study_name=name, storage="sqlite:///studies.db")
S = optuna.trial.TrialState
trials = study.trials
count = {s: sum(t.state == s for t in trials) for s in (S.COMPLETE, S.PRUNED, S.FAIL)}
devices = sorted({str(t.user_attrs.get("device")) for t in trials})
epochs = sum(len(t.intermediate_values) for t in trials)
train_s = sum(t.user_attrs.get("train_seconds", 0) for t in trials)
meta = json.load(open("export/model.json"))
print(open(os.path.join(os.environ["OUT"], "main_seconds.txt")).read().strip())
print(f"trials complete / pruned / failed: {count[S.COMPLETE]} / {count[S.PRUNED]} / {count[S.FAIL]}")
print(f"trial devices: {devices}; epochs trained: {epochs}; trial train_seconds summed: {train_s:.1f}")
print(f"best validation accuracy: {study.best_value:.4f} (trial #{study.best_trial.number})")
print(f"export: test accuracy {meta['test_accuracy']:.3f}, macro-F1 {meta.get('test_macro_f1', float('nan')):.3f}, "
      f"train_seconds {meta.get('train_seconds')}, members {[m.get('trial') for m in meta.get('members', [])]}")
members = meta.get("members", [])
if members and "test_accuracy" in members[0]:
    accs = [m["test_accuracy"] for m in members]
    print(f"the {len(accs)} members alone: {min(accs):.3f}-{max(accs):.3f}")
EOF
}

step_anytime() {
  set -euo pipefail
  python bench/bench_anytime.py --systems gsearch --budgets "$ANYTIME_BUDGET" --split-seeds "$ANYTIME_SEEDS" \
    --device "$DEVICE" --json "$OUT/anytime.json" | tee "$OUT/anytime.txt"
}

# every figure in one file, $OUT/figures.txt: written however the script ends
write_figures() {
  {
    echo "gpu_check figures: DEVICE=$DEVICE QUICK=$QUICK, $(date -u)"
    [ -f "$OUT/env.txt" ] && grep -E '^(torch |torch.cuda|cuda:|commit|CPU)' "$OUT/env.txt"
    for f in tests.txt population.txt main.txt anytime.txt; do
      [ -f "$OUT/$f" ] || continue
      echo; echo "--- $f"
      case "$f" in
        tests.txt) grep -E '^(SKIPPED|FAILED|ERROR)|passed|failed|skipped' "$OUT/$f" || true ;;
        anytime.txt) sed -n '/^system/,$p' "$OUT/$f" ;;
        *) cat "$OUT/$f" ;;
      esac
    done
    echo; echo "--- summary"; grep -E '^(==|   [a-z]+:)' "$OUT/summary.txt"
  } >"$OUT/figures.txt" 2>&1 || true
}
trap 'write_figures; rm -rf "$WORK"' EXIT

export -f step_install step_env step_tests step_population step_main step_export step_anytime
export ROOT VENV_DIR FRESH

# -- run them -------------------------------------------------------------------------------

for step in $STEPS; do
  case "$step" in
    install)
      if [ -n "$VENV" ]; then
        echo "== install: skipped, VENV=$VENV is used as it is" | tee -a "$OUT/summary.txt"
      elif ! run_step install "$T_INSTALL" step_install; then
        echo "install failed: stopping (see $OUT/install_failed.txt, install.log)" | tee -a "$OUT/summary.txt"
        exit 1
      fi ;;
    env)
      run_step env "$T_ENV" step_env || { echo "env failed: stopping" | tee -a "$OUT/summary.txt"; exit 1; } ;;
    tests) run_step tests "$T_TESTS" step_tests || true ;;
    population) run_step population "$T_POPULATION" step_population || true ;;
    main) run_step main "$T_MAIN" step_main || true ;;
    export) run_step export "$T_EXPORT" step_export || true ;;
    anytime) run_step anytime "$T_ANYTIME" step_anytime || true ;;
    *) echo "unknown step '$step' (install env tests population main export anytime)" >&2; exit 2 ;;
  esac
done

write_figures
cat "$OUT/figures.txt"
echo "results in $OUT"
exit "$failed"
