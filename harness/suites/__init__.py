"""Suite kinds (perplexity, benchmark, toolcall, latency, serving_latency): typed configs, measure and compare."""
