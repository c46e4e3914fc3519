#!/usr/bin/env bash
# ncu on one launch of the default tile (prefill G1 n4096) for each tree: stall reasons.
set -u
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 CUGROUPGEMM_CACHE_DIR=/tmp/cgc
for t in main ka; do
  ncu --clock-control none --kernel-name regex:sm90_fp8_masked_gemm --launch-skip 5 --launch-count 1 \
      --section WarpStateStats --section SchedulerStats --section SourceCounters --section SpeedOfLight \
      -f -o $OUT/$t python3 scripts/probe_sm90.py base --trees ab/$t/kernels_cu --configs 64x128x64x2 --shapes 0 > $OUT/$t.run.log 2>&1
  tail -2 $OUT/$t.run.log
  ncu --import $OUT/$t.ncu-rep --page details --csv > $OUT/$t.details.csv 2>&1
  ncu --import $OUT/$t.ncu-rep --page source --csv --print-source sass > $OUT/$t.source.csv 2>&1
  head -c 300 $OUT/$t.source.csv; echo
done
cd $OUT && tar czf ncu.tgz *.csv *.run.log && rm -f *.csv *.run.log
ls -la $OUT
