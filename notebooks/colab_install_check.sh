#!/bin/bash
# Check the notebooks' Colab install cell on an environment with Colab's older jax / flax.
#
# Creates a venv (default /tmp/colab-check) holding jax 0.7.2 and flax 0.11.2 (what Colab
# shipped), runs the install cell's pip command against this checkout's last commit
# (git+file://, instead of the GitHub URL), prints the versions pip ended with, then runs
# notebooks 01 and 03 at smoke size from outside the checkout. Needs PyPI; a few minutes.
#
#   bash notebooks/colab_install_check.sh [venv-dir]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-/tmp/colab-check}
rm -rf "$venv" && python3 -m venv "$venv" && . "$venv/bin/activate"
pip install -q -U pip
pip install -q "jax==0.7.2" "jaxlib==0.7.2" "flax==0.11.2" "optax==0.2.4" "numpy<2.3" matplotlib
python -c "import jax, flax; print('preinstalled: jax', jax.__version__, 'flax', flax.__version__)"
cd /tmp
REPO_URL="file://$repo" python - <<'PY'
import importlib.util, os, subprocess, sys
REPO_URL = os.environ["REPO_URL"]  # the notebooks' cell: "https://github.com/sparsejax/sparsejax"
if importlib.util.find_spec("sparsejax") is None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q",
                           f"sparsejax[experiments] @ git+{REPO_URL}"])
PY
python -c "import jax, flax, optax, sparsejax; print('after the install cell: jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__)"
for nb in 01_quickstart 03_sparsity_learning; do
  SPARSEJAX_SMOKE=1 MPLBACKEND=Agg JAX_PLATFORMS=cpu python "$repo/notebooks/$nb.py" > "/tmp/colab-check-$nb.log" 2>&1 \
    && echo "$nb: ran" || { echo "$nb: FAILED (log: /tmp/colab-check-$nb.log)"; exit 1; }
done
