#!/usr/bin/env bash
# The study's GPU call is benchmarks/gpu_paper_scale.sh (prepare here, run on the device:
# the bench, the conv trial, then this study's units until a time limit); see its header.
exec bash "$(dirname "$0")/../../benchmarks/gpu_paper_scale.sh" "$@"
