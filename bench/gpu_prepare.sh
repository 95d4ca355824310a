#!/usr/bin/env bash
# bench/gpu_prepare.sh: build .device/, what bench/gpu.sh needs on a GPU machine that reaches no network.
# Run it here, in the checkout the GPU call is made from (the device tool sends that checkout), then name
# .device in the call's carry:
#
#   bash bench/gpu_prepare.sh [--data-dir DIR] [--check]
#
#   .device/wheels/                 the packages that machine lacks (its image has torch, torchvision, numpy,
#                                   pyyaml, tqdm, pillow, matplotlib, pytest and hypothesis, not pydantic,
#                                   torchsummary or optuna), for CPython 3.12 (the GPU machine's) and 3.11
#                                   (this machine's, to rehearse); pytest and hypothesis as a fallback only
#   .device/mnist/MNIST/raw/*.gz    MNIST's four IDX files, gzipped (bench/gpu.sh unpacks them there)
#   .device/MANIFEST.txt            every file, its size and sha256
#
# --data-dir DIR: where MNIST/raw/ is (default $MNISTLAB_DATA_DIR, then ../shared/data beside the repo).
# --check: also install the wheels offline (pip --isolated --no-index) into throwaway venvs of Python 3.12
# and 3.11 that hold only what the GPU machine has (numpy, pyyaml, tqdm), and import each package.
# The folder and the working tree travel together, 64 MiB at most: the script stops above 60 MiB.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICE_DIR="$REPO/.device"
DATA_DIR=${MNISTLAB_DATA_DIR:-$REPO/../shared/data}
CHECK=0
PY=${PYTHON:-python3}  # any Python with pip: it only downloads

# The versions this project's tests pass with. pydantic pins pydantic-core exactly; the rest are
# pydantic's, optuna's (for `mnistlab sweep`) and pytest's requirements, numpy, pyyaml and tqdm excepted
# (the GPU machine has them, and numpy alone would be 2 x 16 MB).
WHEELS=(
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0
  torchsummary==1.5.1
  optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 greenlet==3.5.6 colorlog==6.12.0 mako==1.4.3
  markupsafe==3.0.4 packaging==26.4
  pytest==9.2.0 iniconfig==2.3.1 pluggy==1.7.0 pygments==2.21.0 hypothesis==6.170.17 sortedcontainers==2.4.0
)
# What bench/gpu.sh asks pip for (the rest come as their requirements); the import names for --check
INSTALL=(pydantic torchsummary optuna pytest hypothesis)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64)
MNIST_FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
LIMIT_MIB=60

while (($#)); do
  case $1 in
    --data-dir) DATA_DIR=$2; shift 2 ;;
    --check) CHECK=1; shift ;;
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_prepare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

ignore_device_dir() {  # .gitignore names /.device/; a checkout without that line still must not commit it
  if ! git -C "$REPO" check-ignore -q "$DEVICE_DIR" 2>/dev/null; then
    echo "/.device/" >>"$(git -C "$REPO" rev-parse --git-path info/exclude)"
    echo "added /.device/ to $(git -C "$REPO" rev-parse --git-path info/exclude)"
  fi
}

download_wheels() {  # into a fresh folder, so that no older version of a package stays beside the new one
  local fresh="$DEVICE_DIR/wheels.new" platform_args=() v
  rm -rf "$fresh"
  mkdir -p "$fresh"
  for p in "${PLATFORMS[@]}"; do platform_args+=(--platform "$p"); done
  for v in 3.12 3.11; do
    echo "wheels for CPython $v ..."
    "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --implementation cp \
      --python-version "$v" "${platform_args[@]}" -d "$fresh" "${WHEELS[@]}"
  done
  rm -rf "$DEVICE_DIR/wheels"
  mv "$fresh" "$DEVICE_DIR/wheels"
}

pack_mnist() {
  local raw="$DATA_DIR/MNIST/raw" dest="$DEVICE_DIR/mnist/MNIST/raw" f
  mkdir -p "$dest"
  for f in "${MNIST_FILES[@]}"; do
    if [[ ! -f $raw/$f ]]; then
      echo "gpu_prepare.sh: $raw/$f not found: give --data-dir DIR (DIR/MNIST/raw/ holding the IDX files)" >&2
      exit 2
    fi
    if [[ ! -f $dest/$f.gz || $raw/$f -nt $dest/$f.gz ]]; then
      gzip -6 -c "$raw/$f" >"$dest/$f.gz.part" && mv "$dest/$f.gz.part" "$dest/$f.gz"
    fi
  done
}

write_manifest() {
  (cd "$DEVICE_DIR" && find wheels mnist -type f | sort | while read -r f; do
     printf '%s\t%s\t%s\n' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -c1-64)"
   done) >"$DEVICE_DIR/MANIFEST.txt"
}

check_size() {  # what travels: the tracked and untracked-not-ignored files, and .device
  local tree carry total
  tree=$(cd "$REPO" && git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null |
         awk '{s += $1} END {print s + 0}')
  carry=$(du -sb "$DEVICE_DIR" | cut -f1)
  total=$((tree + carry))
  awk -v c="$carry" -v t="$total" -v w="$(du -sb "$DEVICE_DIR/wheels" | cut -f1)" \
      -v m="$(du -sb "$DEVICE_DIR/mnist" | cut -f1)" 'BEGIN {
    printf "carry .device: %.1f MiB (wheels %.1f, mnist %.1f); with the working tree: %.1f MiB of 64\n",
           c / 1048576, w / 1048576, m / 1048576, t / 1048576 }'
  if ((total > LIMIT_MIB * 1048576)); then
    echo "gpu_prepare.sh: over ${LIMIT_MIB} MiB: the device call would refuse it" >&2
    exit 1
  fi
}

find_python() {  # VERSION: an interpreter of that version that runs (a pyenv shim may not), or nothing
  local candidate
  for candidate in "python$1" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/"python$1"; do
    if "$candidate" -c "import sys, venv" >/dev/null 2>&1; then echo "$candidate"; return; fi
  done
}

check_offline_install() {  # a throwaway venv per Python: the GPU machine's baseline, then the wheels, offline
  local version py venv tmp
  tmp=$(mktemp -d)
  for version in 3.12 3.11; do
    py=$(find_python "$version")
    if [[ -z $py ]]; then echo "check: no Python $version here, skipped"; continue; fi
    venv="$tmp/$version"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check numpy pyyaml tqdm  # the machine has these
    "$venv/bin/pip" install --quiet --disable-pip-version-check --isolated --no-index \
      --find-links "$DEVICE_DIR/wheels" "${INSTALL[@]}"
    "$venv/bin/python" - <<'EOF'
import sys
from importlib.metadata import version
import pydantic, optuna, pytest, hypothesis, sqlalchemy, alembic  # noqa: F401  (torchsummary imports torch)
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(storage="sqlite:///:memory:")  # sqlalchemy and alembic at work
study.optimize(lambda t: (t.suggest_float("x", -1, 1)) ** 2, n_trials=3)
print(f"check: Python {sys.version.split()[0]}: installed offline and imported "
      + ", ".join(f"{n} {version(n)}" for n in ("pydantic", "pydantic-core", "torchsummary", "optuna", "pytest",
                                                "hypothesis")))
EOF
  done
  rm -rf "$tmp"
}

mkdir -p "$DEVICE_DIR"
ignore_device_dir
download_wheels
pack_mnist
write_manifest
check_size
if ((CHECK)); then check_offline_install; fi
echo "ready: name .device in the device call's carry; there run: bash bench/gpu.sh \"\$OUT\""
