#!/usr/bin/env bash
# Builds DeepGEMM in place from its source tree, so that `python -m cugroupgemm bench`
# times it beside cugroupgemm in the same run. A peer for measurements only: nothing in
# cugroupgemm imports it, and its source never enters this repository.
#   bash scripts/build_deepgemm.sh [DEEPGEMM_DIR]      (default: third_party/DeepGEMM,
#                                                       which .gitignore ignores)
#   export PYTHONPATH=DEEPGEMM_DIR:$PYTHONPATH
# The tree is DeepGEMM with its submodules third-party/cutlass and third-party/fmt, the
# layout `git clone --recursive https://github.com/deepseek-ai/DeepGEMM` gives (measured
# in docs/performance.md: commit 54e2261, CUTLASS f3fde58, fmt 553ec11, the commit
# shared/PEERS.md timed on the H100; for that run assembled from mirrors at those commits,
# the clone itself not tried). Needs torch, nvcc and about 90 s on the H200
# machine; DeepGEMM then compiles each shape's kernel on its first call (about 10 s each).
set -euo pipefail
DIR=$(realpath "${1:-third_party/DeepGEMM}")
cd "$DIR"
# As DeepGEMM's develop.sh: CUTLASS's headers where its JIT compiler looks, the extension
# built and linked into the package.
ln -sfn "$DIR/third-party/cutlass/include/cutlass" deep_gemm/include/cutlass
ln -sfn "$DIR/third-party/cutlass/include/cute" deep_gemm/include/cute
# The system g++: the image's default g++ built an extension that crashed in std::regex on
# its first JIT compile (shared/PEERS.md).
CXX=/usr/bin/g++ CC=/usr/bin/gcc python3 setup.py build
extension=$(find build -name "_C*.so" | head -1)
ln -sf "$DIR/$extension" deep_gemm/
echo "built $extension; use it with: export PYTHONPATH=$DIR:\$PYTHONPATH"
