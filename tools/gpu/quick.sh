#!/bin/bash
# First device call: GPU kernel tests + quick engine timings. Logs under $OUT.
set -o pipefail
source tools/gpu/env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $OUT/gpu.txt
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)" | tee -a $OUT/gpu.txt
R=$PWD; (cd /tmp && timeout 200 python3 -m pytest -q -m gpu $R/tests/test_plugins_decoder.py $R/tests/test_plugins_waveglow.py -x 2>&1 | tail -25) | tee $OUT/pytest_gpu.log
timeout 330 python3 tools/gpu/quick_bench.py 2>&1 | tee $OUT/quick_bench.log
