# Runs one libFuzzer target for CTest: cmake -DFUZZER=.. -DSEEDS=.. -DSCRATCH=.. -DARTIFACTS=..
# -DSECONDS=.. -P run_fuzzer.cmake. A script rather than a plain test command because the scratch
# corpus must be emptied first (a corpus left by an earlier run would make runs differ).
file(REMOVE_RECURSE "${SCRATCH}")
file(MAKE_DIRECTORY "${SCRATCH}" "${ARTIFACTS}")
# -timeout: one input taking this long is reported as a hang (libFuzzer's default is 20 minutes).
execute_process(
  COMMAND "${FUZZER}" -max_total_time=${SECONDS} -rss_limit_mb=2048 -timeout=10
          -print_final_stats=1 -artifact_prefix=${ARTIFACTS} "${SCRATCH}" "${SEEDS}"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} failed (${rc}); the input that failed is in ${ARTIFACTS}")
endif()
