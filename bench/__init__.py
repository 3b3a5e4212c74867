"""Benchmarks: modelport against its peers (suite), A/B runs, profiling, the GPU check. See docs/performance.md."""
