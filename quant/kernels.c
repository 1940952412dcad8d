/* Fused RTN kernels on BF16 weights, bit-identical to compressed-tensors' torch path (see quant/kernels.py).
 *
 * Every kernel works on a row-major [rows, cols] block of BF16 bit patterns (uint16). Arithmetic
 * follows torch's CPU kernels for bfloat16: widen to float32, compute one operation in float32,
 * round back to bfloat16 (round to nearest even) before the next operation.
 * Preconditions (checked by the caller): inputs finite, scales finite and > 0, cols % gc == 0.
 */
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <stdlib.h>

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* c10::BFloat16 round_to_nearest_even, for non-NaN values */
static inline float round_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    memcpy(&f, &u, 4);
    return f;
}

/* c10 fp8e4m3fn_from_fp32_value (round to nearest even) for |v| <= 448, branch-free so that it vectorizes.
 * bits: the float's bit pattern; denormal: rint(|v| * 2^9), the value in units of the smallest fp8 denormal. */
static inline uint8_t fp8e4m3fn_bits(uint32_t bits, uint32_t denormal) {
    const uint32_t sign = bits & 0x80000000u;
    bits ^= sign;
    const uint32_t normal = (bits + ((uint32_t)(7 - 127) << 23) + 0x7FFFFu + ((bits >> 20) & 1u)) >> 20;
    const uint32_t is_denormal = 0u - (uint32_t)(bits < (121u << 23));
    const uint32_t result = (denormal & is_denormal) | (normal & ~is_denormal);
    return (uint8_t)((result & 0xFFu) | (sign >> 24));
}

/* out[rows/gr (ceil), cols/gc]: the largest |x| bit pattern of each gr x gc block (0x7F80 = inf, above: NaN);
 * returns the largest of all. */
uint16_t qg_absmax_bf16(const uint16_t *x, int64_t rows, int64_t cols, int64_t gr, int64_t gc, uint16_t *out) {
    const int64_t ng = cols / gc;
    uint16_t top = 0;
    for (int64_t r = 0; r < rows; r++) {
        uint16_t *o = out + (r / gr) * ng;
        const uint16_t *xr = x + r * cols;
        const int first = (r % gr) == 0;
        for (int64_t g = 0; g < ng; g++) {
            const uint16_t *xg = xr + g * gc;
            uint16_t m = 0;
            for (int64_t i = 0; i < gc; i++) {
                uint16_t a = xg[i] & 0x7FFFu;
                m = a > m ? a : m;
            }
            o[g] = (first || m > o[g]) ? m : o[g];
            top = m > top ? m : top;
        }
    }
    return top;
}

/* Symmetric scales as compressed-tensors' calculate_qparams computes them in BF16:
 * scale = bf16(absmax / half_range), and eps where that is 0. absmax: n finite BF16 values >= 0. */
void qg_scales_bf16(const uint16_t *absmax, int64_t n, float half_range, uint16_t eps, uint16_t *out) {
    for (int64_t i = 0; i < n; i++) {
        float s = round_to_bf16(bf16_to_f32(absmax[i]) / half_range);
        uint32_t u;
        memcpy(&u, &s, 4);
        const uint16_t bits = (uint16_t)(u >> 16);
        out[i] = bits == 0 ? eps : bits;
    }
}

/* The largest |x| bit pattern of n BF16 values: >= 0x7F80 means some value is Inf or NaN */
uint16_t qg_absmax_all_bf16(const uint16_t *x, int64_t n) {
    uint16_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        uint16_t a = x[i] & 0x7FFFu;
        m = a > m ? a : m;
    }
    return m;
}

/* Symmetric integer RTN of groups of gc columns (gc = cols: per channel), packed `bits` per element:
 *   q = clamp(round_half_even(bf16(x / scale)), qmin, qmax) + offset, element i of a row at bit i * bits
 *   of the row's little-endian byte stream (compressed-tensors' pack_to_int32 when offset = 2^(bits-1);
 *   bits = 8, offset = 0: plain int8). scale: [rows, cols / gc] BF16. bits in {1, 2, 4, 8}. */
void qg_quant_int_bf16(const uint16_t *x, int64_t rows, int64_t cols, const uint16_t *scale, int64_t gc,
                       int32_t qmin, int32_t qmax, int32_t offset, int32_t bits, uint8_t *out) {
    const int64_t ng = cols / gc;
    const int64_t row_bytes = cols * bits / 8;
    const float lo = (float)qmin, hi = (float)qmax;
    uint8_t *q = malloc((size_t)cols);
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *xr = x + r * cols;
        for (int64_t g = 0; g < ng; g++) {
            const float s = bf16_to_f32(scale[r * ng + g]);
            const uint16_t *xg = xr + g * gc;
            uint8_t *qg = q + g * gc;
            for (int64_t i = 0; i < gc; i++) {
                float v = rintf(round_to_bf16(bf16_to_f32(xg[i]) / s));
                v = v < lo ? lo : (v > hi ? hi : v);
                qg[i] = (uint8_t)((int32_t)v + offset);
            }
        }
        uint8_t *o = out + r * row_bytes;
        if (bits == 8) {
            memcpy(o, q, (size_t)cols);
        } else if (bits == 4) {
            for (int64_t b = 0; b < row_bytes; b++) o[b] = (uint8_t)((q[2 * b] & 15u) | (q[2 * b + 1] << 4));
        } else {
            const int per_byte = 8 / bits;
            const uint8_t mask = (uint8_t)((1u << bits) - 1u);
            for (int64_t b = 0; b < row_bytes; b++) {
                uint8_t byte = 0;
                for (int k = 0; k < per_byte; k++) byte |= (uint8_t)((q[b * per_byte + k] & mask) << (k * bits));
                o[b] = byte;
            }
        }
    }
    free(q);
}

/* FP8 (e4m3fn) RTN of br x bc blocks: q = fp8(clamp(bf16(x / scale), -448, 448)); scale: [ceil(rows/br), cols/bc] */
void qg_quant_fp8_block_bf16(const uint16_t *x, int64_t rows, int64_t cols, const uint16_t *scale, int64_t br,
                             int64_t bc, uint8_t *out) {
    const int64_t nb = cols / bc;
    const float lo = -448.0f, hi = 448.0f;
    float *v = malloc((size_t)cols * sizeof(float));
    uint32_t *bits = malloc((size_t)cols * sizeof(uint32_t));
    uint32_t *denormal = malloc((size_t)cols * sizeof(uint32_t));
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *xr = x + r * cols;
        const uint16_t *sr = scale + (r / br) * nb;
        uint8_t *o = out + r * cols;
        for (int64_t b = 0; b < nb; b++) {
            const float s = bf16_to_f32(sr[b]);
            const uint16_t *xb = xr + b * bc;
            float *vb = v + b * bc;
            uint32_t *db = denormal + b * bc;
            for (int64_t i = 0; i < bc; i++) {
                float w = round_to_bf16(bf16_to_f32(xb[i]) / s);
                w = w < lo ? lo : (w > hi ? hi : w);
                vb[i] = w;
                db[i] = (uint32_t)(int32_t)rintf(fabsf(w) * 512.0f);
            }
        }
        memcpy(bits, v, (size_t)cols * sizeof(float));
        for (int64_t i = 0; i < cols; i++) o[i] = fp8e4m3fn_bits(bits[i], denormal[i]);
    }
    free(v);
    free(bits);
    free(denormal);
}
