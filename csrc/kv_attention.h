// One query's attention over cached keys and values, as a building block for fused decoding code
// (csrc/gpt2_decode.cpp). Defined in kv_attention.cpp.
#pragma once

#include <cstdint>

namespace sslfast {

// softmax(query · keys * scale) @ values into out (D,) over `visible` cached rows (`key_stride` /
// `value_stride` floats apart), summed in double. Scratch: scores (visible,), acc (D,).
void attend_row(const float* query, const float* keys, int64_t key_stride, const float* values, int64_t value_stride,
                int64_t visible, int64_t D, double scale, double* scores, double* acc, float* out);

}  // namespace sslfast
