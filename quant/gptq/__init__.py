"""MoE-aware GPTQ with calibration data (`quantgate quantize --method gptq`)."""
