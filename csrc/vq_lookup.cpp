// Nearest-codebook lookup on CPU: blocked over rows and codes with a running argmin, so the N x K
// distance matrix never exists. Each thread takes a block of rows; for each block of codes it forms
// the cross term x·cᵀ with one BLAS call into a cache-sized scratch tile (as FAISS's exhaustive
// search does), then folds ||c||² − 2 x·c into its running minimum while the tile is still in cache.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <limits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define SSLFAST_X86 1
#endif

namespace sslfast {

namespace {
constexpr int64_t kRowBlock = 128;
constexpr int64_t kCodeBlock = 512;

// Folds one row of the cross-term tile into the running (best, best_idx):
// candidate distance (up to the row's own norm) is code_norm[k] - 2 * cross[k]. Ties keep the lowest index.
void argmin_row_scalar(const float* cross, const float* code_norm, int64_t k0, int64_t codes,
                       float& best, int64_t& best_idx) {
  for (int64_t k = 0; k < codes; ++k) {
    const float d = code_norm[k] - 2.0f * cross[k];
    if (d < best) {  // strict: ties keep the lowest index
      best = d;
      best_idx = k0 + k;
    }
  }
}

#ifdef SSLFAST_X86
__attribute__((target("avx2,fma")))
void argmin_row_avx2(const float* cross, const float* code_norm, int64_t k0, int64_t codes,
                     float& best, int64_t& best_idx) {
  const int64_t vec_end = codes - codes % 8;
  if (vec_end > 0) {
    __m256 lane_best = _mm256_set1_ps(std::numeric_limits<float>::infinity());
    __m256i lane_idx = _mm256_setzero_si256();
    __m256i cur = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i step = _mm256_set1_epi32(8);
    const __m256 minus_two = _mm256_set1_ps(-2.0f);
    for (int64_t k = 0; k < vec_end; k += 8) {
      const __m256 d = _mm256_fmadd_ps(minus_two, _mm256_loadu_ps(cross + k), _mm256_loadu_ps(code_norm + k));
      const __m256 lt = _mm256_cmp_ps(d, lane_best, _CMP_LT_OQ);
      lane_best = _mm256_blendv_ps(lane_best, d, lt);
      lane_idx = _mm256_blendv_epi8(lane_idx, cur, _mm256_castps_si256(lt));
      cur = _mm256_add_epi32(cur, step);
    }
    alignas(32) float vals[8];
    alignas(32) int32_t idxs[8];
    _mm256_store_ps(vals, lane_best);
    _mm256_store_si256(reinterpret_cast<__m256i*>(idxs), lane_idx);
    float b = vals[0];
    int32_t bi = idxs[0];
    for (int j = 1; j < 8; ++j) {
      if (vals[j] < b || (vals[j] == b && idxs[j] < bi)) {
        b = vals[j];
        bi = idxs[j];
      }
    }
    if (b < best) {  // earlier code blocks hold lower indices: strict keeps them on ties
      best = b;
      best_idx = k0 + bi;
    }
  }
  argmin_row_scalar(cross + vec_end, code_norm + vec_end, k0 + vec_end, codes - vec_end, best, best_idx);
}
#endif

using ArgminRowFn = void (*)(const float*, const float*, int64_t, int64_t, float&, int64_t&);

ArgminRowFn pick_argmin_row() {
#ifdef SSLFAST_X86
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return argmin_row_avx2;
#endif
  return argmin_row_scalar;
}
}  // namespace

// x (N, D) float32 contiguous, codebook (K, D) float32 contiguous.
// Writes indices (N,) int64 and squared distances (N,) float32 (clamped at 0) into the given outputs.
void vq_lookup_cpu(const at::Tensor& x, const at::Tensor& codebook, at::Tensor& indices, at::Tensor& sqdist) {
  TORCH_CHECK(x.device().is_cpu() && codebook.device().is_cpu(), "vq_lookup_cpu: CPU tensors expected");
  TORCH_CHECK(x.dim() == 2 && codebook.dim() == 2 && x.size(1) == codebook.size(1),
              "vq_lookup_cpu: x (N, D) and codebook (K, D) expected");
  TORCH_CHECK(x.scalar_type() == at::kFloat && codebook.scalar_type() == at::kFloat,
              "vq_lookup_cpu: float32 tensors expected");
  const at::Tensor xc = x.contiguous();
  const at::Tensor cc = codebook.contiguous();
  const int64_t N = xc.size(0), D = xc.size(1), K = cc.size(0);
  TORCH_CHECK(K > 0, "vq_lookup_cpu: empty codebook");

  TORCH_CHECK(indices.is_contiguous() && indices.scalar_type() == at::kLong && indices.numel() == N,
              "vq_lookup_cpu: indices must be a contiguous int64 tensor of N elements");
  TORCH_CHECK(sqdist.is_contiguous() && sqdist.scalar_type() == at::kFloat && sqdist.numel() == N,
              "vq_lookup_cpu: sqdist must be a contiguous float32 tensor of N elements");
  if (N == 0) return;

  const at::Tensor code_norms = cc.pow(2).sum(1);  // (K,)
  const float* cn = code_norms.data_ptr<float>();
  static const ArgminRowFn argmin_row = pick_argmin_row();
  const float* xp = xc.data_ptr<float>();
  int64_t* out_idx = indices.data_ptr<int64_t>();
  float* out_dist = sqdist.data_ptr<float>();

  at::parallel_for(0, (N + kRowBlock - 1) / kRowBlock, 1, [&](int64_t block_begin, int64_t block_end) {
    at::Tensor scratch = at::empty({kRowBlock, std::min(kCodeBlock, K)}, xc.options());
    std::vector<float> best(kRowBlock);
    std::vector<int64_t> best_idx(kRowBlock);
    for (int64_t blk = block_begin; blk < block_end; ++blk) {
      const int64_t r0 = blk * kRowBlock;
      const int64_t rows = std::min(kRowBlock, N - r0);
      const at::Tensor x_rows = xc.narrow(0, r0, rows);  // (rows, D)
      std::fill(best.begin(), best.end(), std::numeric_limits<float>::infinity());
      std::fill(best_idx.begin(), best_idx.end(), 0);
      for (int64_t k0 = 0; k0 < K; k0 += kCodeBlock) {
        const int64_t codes = std::min(kCodeBlock, K - k0);
        at::Tensor tile = scratch.view({-1}).narrow(0, 0, rows * codes).view({rows, codes});  // (rows, codes)
        at::mm_out(tile, x_rows, cc.narrow(0, k0, codes).t());           // x·cᵀ
        const float* tp = tile.data_ptr<float>();
                for (int64_t r = 0; r < rows; ++r) {
          argmin_row(tp + r * codes, cn + k0, k0, codes, best[r], best_idx[r]);
        }
      }
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = xp + (r0 + r) * D;
        float norm = 0.f;
        for (int64_t d = 0; d < D; ++d) norm += xr[d] * xr[d];
        const float dist = norm + best[r];
        out_dist[r0 + r] = dist > 0.f ? dist : 0.f;
        out_idx[r0 + r] = best_idx[r];
      }
    }
  });
}

}  // namespace sslfast
