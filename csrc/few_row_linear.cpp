// y = x @ W^T + b for a few rows of x (token-by-token decoding), fp32 on the CPU.
//
// With 1-16 rows a projection does one or a few multiply-adds per weight element it reads, so its time is
// the time to stream the weight from memory once. Each thread streams its own contiguous part of the weight:
//  - W stored (out, in) (nn.Linear, a tied vocabulary): a thread takes a block of output rows and reads each
//    row once, with every input row's dot product accumulated in registers;
//  - W stored (in, out) (GPT-2's Conv1D, seen as a transposed view): a thread takes a band of output columns
//    and walks the input dimension a few rows at a time, reading a contiguous segment of each weight row and
//    updating its band of the result, which stays in L1/L2.
// Registered as the dispatcher op sslfast::few_row_linear (no pybind11 call on the hot path).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <cstring>
#include <vector>

#include "few_row_linear.h"

namespace sslfast {
namespace {

constexpr int64_t kMaxRows = kFewRowMaxRows;  // rows handled in registers at once; more rows are done 8 at a time

using Kernel = void (*)(const float*, int64_t, const float*, int64_t, const float*, float*, int64_t, int64_t, int64_t,
                        int64_t);

#if defined(__x86_64__) || defined(_M_X64)
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
#define SSLFAST_LANES 16
#include "few_row_linear_kernels.h"
#undef SSLFAST_LANES
}  // namespace avx512
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#define SSLFAST_LANES 8
#include "few_row_linear_kernels.h"
#undef SSLFAST_LANES
}  // namespace avx2
#pragma GCC pop_options
#endif
namespace generic {
#define SSLFAST_LANES 4
#include "few_row_linear_kernels.h"
#undef SSLFAST_LANES
}  // namespace generic

Kernel pick(bool rows, int m) {
#if defined(__x86_64__) || defined(_M_X64)
  static const int level = __builtin_cpu_supports("avx512f") ? 2
                           : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) ? 1 : 0;
  if (level == 2) return avx512::pick(rows, m);
  if (level == 1) return avx2::pick(rows, m);
#endif
  return generic::pick(rows, m);
}

// What follows the product, on a band [c0, c1) of `rows` output rows while it is in cache: an activation, then
// a residual added (a decoding layer's MLP and output projections).
void epilogue(float* y, const float* residual, int64_t ldy, int64_t rows, int64_t c0, int64_t c1, bool gelu) {
  for (int64_t m = 0; m < rows; ++m) {
    float* row = y + m * ldy;
    const float* add = residual ? residual + m * ldy : nullptr;
    for (int64_t c = c0; c < c1; ++c) {
      float v = row[c];
      if (gelu) v = gelu_tanh(v);
      if (add) v += add[c];
      row[c] = v;
    }
  }
}

}  // namespace

void few_row_columns_product(const float* x, int64_t ldx, const float* w, int64_t ldw, const float* bias, float* y,
                             int64_t ldy, int64_t rows, int64_t K, int64_t N) {
  pick(false, static_cast<int>(rows))(x, ldx, w, ldw, bias, y, ldy, K, 0, N);
}

void few_row_rows_product(const float* x, int64_t ldx, const float* w, int64_t ldw, const float* bias, float* y,
                          int64_t ldy, int64_t rows, int64_t K, int64_t n0, int64_t n1) {
  pick(true, static_cast<int>(rows))(x, ldx, w, ldw, bias, y, ldy, K, n0, n1);
}

// x (M, K) fp32 contiguous, weight (N, K) fp32 with unit stride along K (nn.Linear) or along N (a transposed
// (K, N) matrix), bias (N,) or undefined -> activation(x @ weight^T + bias) + residual, (M, N). `activation`:
// "none" or "gelu_tanh"; `residual`: (M, N) fp32 or undefined.
at::Tensor few_row_linear_cpu(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                              const c10::optional<at::Tensor>& residual, c10::string_view activation) {
  TORCH_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1),
              "few_row_linear: expected x (M, K) and weight (N, K), got ", x.sizes(), " and ", weight.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat,
              "few_row_linear: fp32 only");
  TORCH_CHECK(x.is_contiguous(), "few_row_linear: x must be contiguous");
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  const bool rows_layout = weight.stride(1) == 1 && (N <= 1 || weight.stride(0) >= K);
  const bool columns_layout = weight.stride(0) == 1 && (K <= 1 || weight.stride(1) >= N);
  TORCH_CHECK(rows_layout || columns_layout, "few_row_linear: the weight needs a unit stride along one dimension, "
              "got strides ", weight.strides());
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->dim() == 1 && bias->size(0) == N && bias->is_contiguous(),
                "few_row_linear: bias must be a contiguous fp32 (N,) = (", N, ",) vector, got ", bias->sizes());
  }
  TORCH_CHECK(activation == "none" || activation == "gelu_tanh",
              "few_row_linear: activation must be 'none' or 'gelu_tanh', got '", std::string(activation), "'");
  const bool apply_gelu = activation == "gelu_tanh";
  const bool has_residual = residual.has_value() && residual->defined();
  if (has_residual) {
    TORCH_CHECK(residual->scalar_type() == at::kFloat && residual->dim() == 2 && residual->size(0) == M &&
                residual->size(1) == N && residual->is_contiguous(),
                "few_row_linear: residual must be a contiguous fp32 (M, N) = (", M, ", ", N, ") tensor, got ",
                residual->sizes());
  }
  at::Tensor y = at::empty({M, N}, x.options());
  if (M == 0 || N == 0) return y;
  if (K == 0) {
    has_bias ? y.copy_(bias->expand({M, N})) : y.zero_();
    epilogue(y.data_ptr<float>(), has_residual ? residual->data_ptr<float>() : nullptr, N, M, 0, N, apply_gelu);
    return y;
  }
  const float* rp = has_residual ? residual->data_ptr<float>() : nullptr;
  const bool has_epilogue = apply_gelu || has_residual;
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* bp = has_bias ? bias->data_ptr<float>() : nullptr;
  float* yp = y.data_ptr<float>();
  const int64_t ldw = rows_layout ? (N <= 1 ? K : weight.stride(0)) : (K <= 1 ? N : weight.stride(1));
  // grains: ~64 KiB of weight per task, so both cores share even a small matrix
  const int64_t grain = std::max<int64_t>(16, (int64_t{1} << 14) / std::max<int64_t>(K, 1));
  // (In, out) weights are split over K between the threads when each gets at least 64 weight rows.
  const int64_t parts = rows_layout ? 1 : few_row_k_parts(K, at::get_num_threads());
  std::vector<float> partials(parts > 1 ? (parts - 1) * std::min(kMaxRows, M) * N : 0);
  for (int64_t m0 = 0; m0 < M; m0 += kMaxRows) {
    const int64_t rows = std::min(kMaxRows, M - m0);
    const Kernel kernel = pick(rows_layout, static_cast<int>(rows));
    const float* xm = xp + m0 * K;
    float* ym = yp + m0 * N;
    const float* rm = rp ? rp + m0 * N : nullptr;
    if (rows_layout) {
      at::parallel_for(0, N, grain, [&](int64_t a, int64_t b) {
        kernel(xm, K, wp, ldw, bp, ym, N, K, a, b);
        if (has_epilogue) epilogue(ym, rm, N, rows, a, b, apply_gelu);
      });
    } else if (parts > 1) {
      // split K: thread t streams weight rows [k0, k1), one contiguous block of memory, into its own partial
      // result (thread 0 into y, with the bias); the partials are then added. Measured faster than splitting
      // the columns, whose short row segments the hardware prefetchers follow less well.
      at::parallel_for(0, parts, 1, [&](int64_t a, int64_t b) {
        for (int64_t t = a; t < b; ++t) {
          int64_t k0, k1;
          few_row_k_range(K, parts, t, &k0, &k1);
          float* out = t == 0 ? ym : partials.data() + (t - 1) * rows * N;
          if (k1 > k0) {
            kernel(xm + k0, K, wp + k0 * ldw, ldw, t == 0 ? bp : nullptr, out, N, k1 - k0, 0, N);
          } else {
            std::fill(out, out + rows * N, 0.f);  // no rows left for this thread (K < parts * chunk)
            if (t == 0 && bp)
              for (int64_t m = 0; m < rows; ++m) std::copy(bp, bp + N, out + m * N);
          }
        }
      });
      for (int64_t t = 1; t < parts; ++t) {
        const float* part = partials.data() + (t - 1) * rows * N;
        for (int64_t m = 0; m < rows; ++m)
          for (int64_t c = 0; c < N; ++c) ym[m * N + c] += part[m * N + c];
      }
      if (has_epilogue) epilogue(ym, rm, N, rows, 0, N, apply_gelu);
    } else {
      // column bands whose edges fall on 16-float boundaries, one or more per thread
      const int64_t blocks = (N + 15) / 16;
      at::parallel_for(0, blocks, std::max<int64_t>(1, grain / 16), [&](int64_t a, int64_t b) {
        const int64_t c0 = a * 16, c1 = std::min(N, b * 16);
        kernel(xm, K, wp, ldw, bp, ym, N, K, c0, c1);
        if (has_epilogue) epilogue(ym, rm, N, rows, c0, c1, apply_gelu);
      });
    }
  }
  return y;
}

}  // namespace sslfast

TORCH_LIBRARY_FRAGMENT(sslfast, m) {
  m.def("few_row_linear(Tensor x, Tensor weight, Tensor? bias, Tensor? residual=None, str activation='none') -> Tensor");
}

TORCH_LIBRARY_IMPL(sslfast, CPU, m) {
  m.impl("few_row_linear", &sslfast::few_row_linear_cpu);
}
