#!/usr/bin/env bash
# Build a separate Python environment with the published SO3LR model's OWN code
# (general-molecular-simulations/so3lr, MIT, and the forks it installs: kabylda/mlff, kabylda/jraph,
# kabylda/jax-md, kabylda/glp, fbruenig/jax-pme, plus sirmarcel/comms that glp imports), so that the
# project can run upstream side by side with its independent re-implementation: to check our numbers
# against SO3LR's own outputs and to time both on the same machine (benchmarks/so3lr_upstream.py).
# Nothing of this code enters the so3krates_lab package or the repository: the clones and the venv live
# outside it (default /work/so3lr_upstream), and the driver script only calls them.
#
# Usage: benchmarks/so3lr_upstream_env.sh [DIR]     (default DIR=/work/so3lr_upstream)
#   DIR/src/<name>  local git clones (made from local mirrors, no network to GitHub needed)
#   DIR/venv        python3.12 virtual environment (so3lr requires python >= 3.12)
# Mirrors (bare git repositories) are taken from these variables or the default paths below:
#   SO3LR_MIRROR MLFF_MIRROR JRAPH_MIRROR JAXMD_MIRROR GLP_MIRROR JAXPME_MIRROR COMMS_MIRROR
# Branches/commits: SO3LR_REF (5ec39b9, the commit the shared reference outputs come from),
#   MLFF_BRANCH (v1.0_dev_import as so3lr's pyproject asks, if the mirror has it, else v1.0),
#   jraph master, jax-md main, glp electrostatics_neighbourlist, jax-pme main, comms main.
# PYTHON (default /root/.pyenv/versions/3.12.1/bin/python3.12). PyPI must be reachable for pip.
#
# What had to be adapted (patches applied only inside the clones, by the python snippets below):
#  * The mirrors lack a few large blobs (mlff/sph_ops/u_matrix.pickle, some notebooks/test data). A plain
#    checkout then fails, so clones use a sparse checkout that skips exactly the missing files.
#  * mlff v1.0: mlff/sph_ops/contract.py loads u_matrix.pickle at import; it is absent, and only the
#    so3kratACE SymmetricContraction needs it, so it is loaded lazily instead (no effect on SO3krates).
#  * mlff v1.0: the annotation Optional[Sequence[[str]]] raises "TypeError: unhashable type: 'list'" on
#    import under Python 3.12.1; rewritten to Optional[Sequence[str]] (annotation only).
#  * so3lr 5ec39b9 ase_utils passes calculate_hessian=..., which mlff v1.0's
#    mlffCalculatorSparse.create_from_ckpt_dir does not accept (it came with the unavailable
#    v1.0_dev_import branch); the argument is now only passed when True, so So3lrCalculator() works.
# The pins below are the versions found to work (jax/jaxlib 0.5.3 and orbax-checkpoint 0.11.13 as so3lr
# pins them; the rest chosen contemporary with jax 0.5.3). Local packages are installed with --no-deps so
# that nothing pulls torch, tensorflow or pymatgen (jax-md's pymatgen is only used by its a2c module).
set -euo pipefail

DIR="${1:-/work/so3lr_upstream}"
PYTHON="${PYTHON:-/root/.pyenv/versions/3.12.1/bin/python3.12}"
M=/work/.mirror
SO3LR_MIRROR="${SO3LR_MIRROR:-$M/general-molecular-simulations+so3lr/repo}"
MLFF_MIRROR="${MLFF_MIRROR:-$M/kabylda+mlff/repo}"
JRAPH_MIRROR="${JRAPH_MIRROR:-$M/kabylda+jraph/repo}"
JAXMD_MIRROR="${JAXMD_MIRROR:-$M/kabylda+jax-md/repo}"
GLP_MIRROR="${GLP_MIRROR:-$M/kabylda+glp/repo}"
JAXPME_MIRROR="${JAXPME_MIRROR:-$M/fbruenig+jax-pme/repo}"
COMMS_MIRROR="${COMMS_MIRROR:-$M/sirmarcel+comms/repo}"
SO3LR_REF="${SO3LR_REF:-5ec39b9}"
if [ -z "${MLFF_BRANCH:-}" ]; then
  if git -C "$MLFF_MIRROR" rev-parse -q --verify "refs/heads/v1.0_dev_import" >/dev/null; then
    MLFF_BRANCH=v1.0_dev_import
  else
    MLFF_BRANCH=v1.0
  fi
fi

mkdir -p "$DIR/src"
cd "$DIR/src"

# clone_ref MIRROR NAME REF: clone, check out REF (branch or commit), skipping blobs the mirror lacks.
clone_ref() {
  local mirror=$1 name=$2 ref=$3
  if [ -d "$name/.git" ]; then
    echo "== $name exists, reusing ($(git -C "$name" log --oneline -1))"
    return 0
  fi
  git clone -q --no-checkout "$mirror" "$name"
  (
    cd "$name"
    if git rev-parse -q --verify "refs/remotes/origin/$ref" >/dev/null; then
      git checkout -q -B "$ref" "origin/$ref" 2>/dev/null || true
    else
      git checkout -q --detach "$ref" 2>/dev/null || true
    fi
    local missing
    missing=$(git ls-tree -r HEAD | while read -r mode type hash path; do
      if [ "$type" = blob ] && ! git cat-file -e "$hash" 2>/dev/null; then echo "$path"; fi
    done)
    git sparse-checkout init --no-cone
    { echo '/*'; for p in $missing; do echo "!/$p"; done; } > .git/info/sparse-checkout
    git read-tree -mu HEAD
    echo "== $name @ $(git log --oneline -1) (ref $ref); skipped missing blobs: ${missing:-none}" | tr '\n' ' '
    echo
  )
}

clone_ref "$SO3LR_MIRROR" so3lr "$SO3LR_REF"
clone_ref "$MLFF_MIRROR" mlff "$MLFF_BRANCH"
clone_ref "$JRAPH_MIRROR" jraph master
clone_ref "$JAXMD_MIRROR" jax-md main
clone_ref "$GLP_MIRROR" glp electrostatics_neighbourlist
clone_ref "$JAXPME_MIRROR" jax-pme main
clone_ref "$COMMS_MIRROR" comms main

# --- patches (idempotent; each prints what it did)
"$PYTHON" - "$DIR/src" <<'PYEOF'
import pathlib, sys
src = pathlib.Path(sys.argv[1])

def patch(rel, old, new, why):
    p = src / rel
    if not p.exists():
        print(f'patch skipped ({rel} not present)'); return
    s = p.read_text()
    if new in s:
        print(f'patch already applied: {rel}: {why}'); return
    if old not in s:
        print(f'patch not needed (pattern absent): {rel}: {why}'); return
    p.write_text(s.replace(old, new)); print(f'patched {rel}: {why}')

if not (src / 'mlff/mlff/sph_ops/u_matrix.pickle').exists():
    patch('mlff/mlff/sph_ops/contract.py',
          "_u_matrix = load_u_matrix()\n\n\ndef get_U_matrix(degrees_in, degree_out, correlation):\n",
          "_u_matrix = None  # loaded lazily: u_matrix.pickle is absent from the local mirror; only SymmetricContraction (so3kratACE) needs it\n\n\n"
          "def get_U_matrix(degrees_in, degree_out, correlation):\n    global _u_matrix\n    if _u_matrix is None:\n        _u_matrix = load_u_matrix()\n",
          'lazy u_matrix.pickle')
p = src / 'mlff/mlff/mdx/potential/mlff_potential_sparse.py'
if p.exists() and 'Sequence[[str]]' in p.read_text():
    p.write_text(p.read_text().replace('Optional[Sequence[[str]]]', 'Optional[Sequence[str]]'))
    print('patched mlff/mdx/potential/mlff_potential_sparse.py: Sequence[[str]] -> Sequence[str]')
cs = (src / 'mlff/mlff/md/calculator_sparse.py').read_text()
if 'calculate_hessian' not in cs:
    patch('so3lr/so3lr/ase_utils.py',
          "        calculate_hessian=calculate_hessian,\n",
          "        **({'calculate_hessian': calculate_hessian} if calculate_hessian else {}),  # mlff v1.0 has no such argument\n",
          'pass calculate_hessian only when True')
PYEOF

# --- virtual environment
if [ ! -x "$DIR/venv/bin/python" ]; then
  "$PYTHON" -m venv "$DIR/venv"
fi
PIP="$DIR/venv/bin/pip"
"$PIP" install -q --upgrade "pip==26.3" 2>&1 | grep -v "is ignored" || true
cat > "$DIR/requirements-pinned.txt" <<'EOF'
jax==0.5.3
jaxlib==0.5.3
orbax-checkpoint==0.11.13
numpy==2.2.6
scipy==1.15.3
ml_dtypes==0.5.1
flax==0.10.6
optax==0.2.4
chex==0.1.89
e3x==1.0.2
jaxopt==0.8.3
jaxtyping==0.3.11
clu==0.0.9
dm-haiku==0.0.14
e3nn-jax==0.20.7
ase==3.25.0
h5py==3.13.0
ml_collections==1.1.0
pandas==2.2.3
scikit-learn==1.6.1
wandb==0.19.11
tensorstore==0.1.86
protobuf==6.33.6
PyYAML==6.0.4
tqdm==4.70.1
setuptools==80.10.2
specable==0.1.1
vesin==0.4.2
click==8.5.1
portpicker==1.6.0
pytest==9.2.0
poetry-core==2.1.3
wheel==0.48.0
EOF
nice -n 10 "$PIP" install -q -r "$DIR/requirements-pinned.txt" > "$DIR/install_pinned.log" 2>&1 \
  || { grep -v "is ignored" "$DIR/install_pinned.log" | tail -30; exit 1; }
for pkg in comms jraph jax-md glp jax-pme mlff so3lr; do
  # build warnings (setuptools licence classifiers etc.) go to the log; a failure still stops the script
  nice -n 10 "$PIP" install -q --no-deps --no-build-isolation --force-reinstall "$DIR/src/$pkg" \
    >> "$DIR/install_local_packages.log" 2>&1 || { tail -30 "$DIR/install_local_packages.log"; exit 1; }
done

# --- smoke test
cd /
"$DIR/venv/bin/python" - <<'PYEOF'
import warnings; warnings.filterwarnings('ignore')
import logging; logging.disable(logging.WARNING)
import jax, so3lr, mlff, glp, jax_md, jaxpme, flax, numpy
print('OK: python', __import__('sys').version.split()[0], '| jax', jax.__version__, '| flax', flax.__version__,
      '| numpy', numpy.__version__, '| so3lr at', so3lr.__file__)
PYEOF
{
  echo "# built $(date -u +%FT%TZ) by benchmarks/so3lr_upstream_env.sh"
  for pkg in so3lr mlff jraph jax-md glp jax-pme comms; do
    echo "$pkg $(git -C "$DIR/src/$pkg" rev-parse HEAD) $(git -C "$DIR/src/$pkg" rev-parse --abbrev-ref HEAD) patched_files: $(git -C "$DIR/src/$pkg" diff --name-only | tr '\n' ' ')"
  done
} > "$DIR/BUILD_INFO.txt"
cat "$DIR/BUILD_INFO.txt"
echo "python: $DIR/venv/bin/python"
