#!/usr/bin/env bash
# GPU checks and the CUDA headline tables, for a machine with a CUDA GPU and the project importable:
#   bash benchmarks/gpu.sh [DATA_DIR] [RESULTS_DIR] [ml1m|beauty|ml1m_large|tests ...]   (default: tests ml1m beauty)
# 1. the CUDA tests (tests/test_gpu.py: the whole stack on CUDA, fp16/bf16/bitsandbytes, and the
#    onnxruntime CUDA provider when onnxruntime-gpu is installed);
# 2. benchmarks/headline.py on CUDA for each dataset named (default: all): trained, evaluated and
#    benchmarked on the GPU, results under RESULTS_DIR/<dataset>-cuda/;
# 3. ml1m_large (not in the default list: name it): the backbone-heavy recipe trained on the GPU, its
#    stages benchmarked on the host CPU (the CPU headline: RESULTS_DIR/ml1m_large-hostcpu/), then on
#    the GPU (RESULTS_DIR/ml1m_large-cuda/).
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/datasets}
RESULTS=${2:-benchmarks/results}
shift $(( $# < 2 ? $# : 2 ))
WHAT=${*:-tests ml1m beauty}
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" || exit 1
for item in $WHAT; do
    case $item in
        tests)  "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu.py || status=1 ;;
        ml1m)   "$PYTHON" benchmarks/headline.py --recipe recipes/ml1m.yaml --data "$DATA/ml-1m.txt" \
                    --name ml1m-cuda --device cuda --results "$RESULTS" || status=1 ;;
        beauty) "$PYTHON" benchmarks/headline.py --recipe recipes/beauty.yaml --data "$DATA/Beauty.txt" \
                    --name beauty-cuda --device cuda --results "$RESULTS" || status=1 ;;
        ml1m_large)
                for bench in cpu cuda; do
                    name=ml1m_large-$([ $bench = cpu ] && echo hostcpu || echo cuda)
                    "$PYTHON" benchmarks/headline.py --recipe recipes/ml1m_large.yaml --data "$DATA/ml-1m.txt" \
                        --name "$name" --device $bench --results "$RESULTS" || status=1
                done ;;
        *) echo "unknown item $item (tests, ml1m, beauty, ml1m_large)"; exit 2 ;;
    esac
done
exit $status
