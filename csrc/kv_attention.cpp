// Attention over a key/value cache for decoding, fp32 on the CPU: append the new keys and values in place at
// each sequence's length, then attend every new query over its sequence's keys (bottom-right causal).
//
// A decoding step has one or a few queries per sequence, so the work per (sequence, head) is a dot product
// with each cached key, a softmax and a weighted sum of the cached values: a few microseconds. What this
// replaces is the dispatch around it (slicing the caches, SDPA's setup, a mask when lengths differ), which cost
// more than the arithmetic. Registered as the dispatcher op sslfast::kvcache_attention_cpp.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kv_attention.h"

namespace sslfast {
namespace {

// Sums in double: the work is a few microseconds either way, and the result is then as close to the exact
// attention as fp32 can hold (at least as close as SDPA's fp32 arithmetic). The per-row loops are built for
// AVX-512, AVX2 and plain x86-64 and picked when the library loads: the extension itself is compiled for the
// baseline ISA, which left the double arithmetic 2 lanes wide.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define SSLFAST_CPU_CLONES __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define SSLFAST_CPU_CLONES
#endif

inline __attribute__((always_inline)) double dot(const float* a, const float* b, int64_t d) {
  double acc = 0.0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < d; ++i) acc += static_cast<double>(a[i]) * b[i];
  return acc;
}

}  // namespace

// One query over `visible` cached keys and values (rows `key_stride` / `value_stride` floats apart):
// softmax(query · keys * scale) @ values into out (D,), summed in double. Scratch: scores (visible,), acc (D,).
SSLFAST_CPU_CLONES void attend_row(const float* query, const float* keys, int64_t key_stride, const float* values,
                                   int64_t value_stride, int64_t visible, int64_t D, double scale, double* scores,
                                   double* acc, float* out) {
  double top = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < visible; ++j) {
    scores[j] = dot(query, keys + j * key_stride, D) * scale;
    top = std::max(top, scores[j]);
  }
  double total = 0.0;
  std::fill(acc, acc + D, 0.0);
  for (int64_t j = 0; j < visible; ++j) {
    const double p = std::exp(scores[j] - top);
    total += p;
    const float* v = values + j * value_stride;
#pragma omp simd
    for (int64_t e = 0; e < D; ++e) acc[e] += p * v[e];
  }
#pragma omp simd
  for (int64_t e = 0; e < D; ++e) out[e] = static_cast<float>(acc[e] / total);
}

namespace {

void check_cache_tensor(const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == 4 && t.stride(3) == 1,
              "kvcache_attention_cpp: ", name, " must be a 4-d fp32 CPU tensor with a unit stride in its last "
              "dimension, got ", t.sizes(), " ", t.scalar_type(), " strides ", t.strides());
}

}  // namespace

// q (B, Sq, H, D); k_cache / v_cache (B, S_max, Hkv, D); cache_seqlens (B,) int32 filled positions before
// the append; k_new / v_new (B, Sq, Hkv, D) or undefined -> out (B, Sq, H, D) contiguous. Rows that see no
// key give 0.
at::Tensor kvcache_attention_cpp(const at::Tensor& q, at::Tensor& k_cache, at::Tensor& v_cache,
                                 const at::Tensor& cache_seqlens, const c10::optional<at::Tensor>& k_new,
                                 const c10::optional<at::Tensor>& v_new, bool causal, double scale) {
  check_cache_tensor("q", q);
  check_cache_tensor("k_cache", k_cache);
  check_cache_tensor("v_cache", v_cache);
  const int64_t B = q.size(0), Sq = q.size(1), H = q.size(2), D = q.size(3);
  const int64_t S_max = k_cache.size(1), Hkv = k_cache.size(2);
  TORCH_CHECK(k_cache.sizes() == v_cache.sizes() && k_cache.size(0) == B && k_cache.size(3) == D && Hkv > 0 &&
              H % Hkv == 0, "kvcache_attention_cpp: q ", q.sizes(), " and caches ", k_cache.sizes(), " / ",
              v_cache.sizes(), " do not match");
  TORCH_CHECK(cache_seqlens.device().is_cpu() && cache_seqlens.scalar_type() == at::kInt &&
              cache_seqlens.dim() == 1 && cache_seqlens.size(0) == B,
              "kvcache_attention_cpp: cache_seqlens must be a (B,) int32 CPU tensor");
  const bool append = k_new.has_value() && k_new->defined();
  TORCH_CHECK(append == (v_new.has_value() && v_new->defined()), "kvcache_attention_cpp: pass both k_new and v_new");
  if (append) {
    check_cache_tensor("k_new", *k_new);
    check_cache_tensor("v_new", *v_new);
    const std::vector<int64_t> want = {B, Sq, Hkv, D};
    TORCH_CHECK(k_new->sizes() == want && v_new->sizes() == want, "kvcache_attention_cpp: k_new / v_new must be ",
                want, ", got ", k_new->sizes(), " / ", v_new->sizes());
  }
  const at::Tensor seqlens = cache_seqlens.contiguous();
  const int32_t* starts = seqlens.data_ptr<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(starts[b] >= 0 && starts[b] + (append ? Sq : 0) <= S_max, "kvcache_attention_cpp: sequence ", b,
                " has ", starts[b], " cached positions", append ? " and the new keys" : "", " do not fit in a cache of ",
                S_max);
  }

  float* kc = k_cache.data_ptr<float>();
  float* vc = v_cache.data_ptr<float>();
  const int64_t kcb = k_cache.stride(0), kcs = k_cache.stride(1), kch = k_cache.stride(2);
  const int64_t vcb = v_cache.stride(0), vcs = v_cache.stride(1), vch = v_cache.stride(2);
  if (append) {
    const float* kn = k_new->data_ptr<float>();
    const float* vn = v_new->data_ptr<float>();
    const int64_t knb = k_new->stride(0), kns = k_new->stride(1), knh = k_new->stride(2);
    const int64_t vnb = v_new->stride(0), vns = v_new->stride(1), vnh = v_new->stride(2);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t i = 0; i < Sq; ++i) {
        const int64_t pos = starts[b] + i;
        for (int64_t g = 0; g < Hkv; ++g) {
          std::memcpy(kc + b * kcb + pos * kcs + g * kch, kn + b * knb + i * kns + g * knh, D * sizeof(float));
          std::memcpy(vc + b * vcb + pos * vcs + g * vch, vn + b * vnb + i * vns + g * vnh, D * sizeof(float));
        }
      }
    }
  }

  at::Tensor out = at::empty({B, Sq, H, D}, q.options());
  float* op = out.data_ptr<float>();
  const float* qp = q.data_ptr<float>();
  const int64_t qb = q.stride(0), qs = q.stride(1), qh = q.stride(2);
  const int64_t group = H / Hkv;
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> scores;
    std::vector<double> acc(D);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H, g = h / group;
      const int64_t length = starts[b] + (append ? Sq : 0);
      const float* keys = kc + b * kcb + g * kch;
      const float* values = vc + b * vcb + g * vch;
      for (int64_t i = 0; i < Sq; ++i) {
        const int64_t visible = causal ? std::min(length, std::max<int64_t>(0, length - Sq + i + 1)) : length;
        float* o = op + ((b * Sq + i) * H + h) * D;
        if (visible == 0) {
          std::fill(o, o + D, 0.0f);
          continue;
        }
        scores.resize(visible);
        attend_row(qp + b * qb + i * qs + h * qh, keys, kcs, values, vcs, visible, D, scale, scores.data(),
                   acc.data(), o);
      }
    }
  });
  return out;
}

}  // namespace sslfast

TORCH_LIBRARY_FRAGMENT(sslfast, m) {
  m.def("kvcache_attention_cpp(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor cache_seqlens, Tensor? k_new, "
        "Tensor? v_new, bool causal, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(sslfast, CPU, m) {
  m.impl("kvcache_attention_cpp", &sslfast::kvcache_attention_cpp);
}
