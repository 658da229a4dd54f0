#!/usr/bin/env bash
# Minimum-versions check: the floors of setup.cfg's install_requires are real.
#
# A fresh venv gets every install_requires pinned to its floor (pkg>=X -> pkg==X, derived from setup.cfg by
# min_versions_floors.py, so the pins cannot drift from the metadata), then the package, then the tests that
# call the most into those libraries: timm saving/loading (local-dir:, hf-hub: through a fake Hub), the
# TimmWrapper and pipeline round trip, the Trainer's steps, checkpoints and resume, the model card and the push,
# the evaluate metric, the reports' plots, the YAML configs and the dataset loaders.
#
# torch and torchvision are not pinned: their floors exist on PyPI only as CUDA builds of several GB, so they stay
# at the release pip picks here (this machine keeps torch 2.14.1 and torchvision 0.29.1 on disk).
#
# Usage: bash .ci/min_versions.sh   (MIN_VERSIONS_VENV=<dir> to choose the venv folder, removed at the end)
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${MIN_VERSIONS_VENV:-${TMPDIR:-/tmp}/ltkd-hf-min-versions}"
trap 'rm -rf "$venv"' EXIT

python3 -m venv --clear "$venv"
. "$venv/bin/activate"
python .ci/min_versions_floors.py --exclude torch --exclude torchvision > "$venv/floors.txt"
echo "Pinned to the floors of setup.cfg:"
sed 's/^/  /' "$venv/floors.txt"
pip install --quiet -c "$venv/floors.txt" -e ".[test]"
pip check
python -c 'import torch, torchvision; print(f"Not pinned: torch {torch.__version__}, torchvision {torchvision.__version__}")'

# About 2-3 minutes on 2 cores. The tests that launch training in other processes (torchrun, a killed and resumed
# run) take minutes more and are left to the main suite.
python -m pytest -q -p no:cacheprovider -k "not sigkill and not rebalance and not several_processes" \
    tests/test_hub_save.py tests/test_hub_card.py tests/test_hub_push.py \
    tests/test_models_loading.py tests/test_trainer.py tests/test_trainer_artefacts.py \
    tests/test_evaluation_module.py tests/test_evaluation_report.py tests/test_data_sources.py \
    tests/test_cli_configs.py
