// The few-row projection as a building block for fused decoding code (csrc/gpt2_decode.cpp): one thread's share
// of x @ W for W stored (in, out), and the epilogue's activation. Defined in few_row_linear.cpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace sslfast {

constexpr int64_t kFewRowMaxRows = 8;  // rows one call of few_row_columns_product takes

// y (rows, N) = x[:, 0:K] @ w[0:K, :] (+ bias), for w (K, N) with rows ldw floats apart and x rows ldx floats
// apart; rows <= kFewRowMaxRows. Streams the weight once, prefetching ahead (the kernel few_row_linear uses for
// an (in, out) weight, picked for this CPU's vector width).
void few_row_columns_product(const float* x, int64_t ldx, const float* w, int64_t ldw, const float* bias, float* y,
                             int64_t ldy, int64_t rows, int64_t K, int64_t N);

// y (rows, n0:n1) = x (rows, K) @ w[n0:n1, :]^T (+ bias[n0:n1]), for w (N, K) with rows ldw floats apart (an
// nn.Linear weight); rows <= kFewRowMaxRows. Each weight row read once (few_row_linear's (out, in) kernel).
void few_row_rows_product(const float* x, int64_t ldx, const float* w, int64_t ldw, const float* bias, float* y,
                          int64_t ldy, int64_t rows, int64_t K, int64_t n0, int64_t n1);

// How few_row_linear splits the inner dimension K of an (in, out) weight between `threads` threads: into this
// many parts (each at least 64 weight rows), part t covering [k0, k1).
inline int64_t few_row_k_parts(int64_t K, int64_t threads) {
  return std::max<int64_t>(1, std::min<int64_t>(threads, K / 64));
}
inline void few_row_k_range(int64_t K, int64_t parts, int64_t t, int64_t* k0, int64_t* k1) {
  const int64_t chunk = (K / parts + 7) / 8 * 8;  // whole 8-row passes
  *k0 = std::min(K, t * chunk);
  *k1 = t + 1 == parts ? K : std::min(K, (t + 1) * chunk);
}

// GPT-2's GELU (the tanh approximation), as few_row_linear's epilogue computes it.
inline float gelu_tanh(float v) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  return 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
}

}  // namespace sslfast
