// GPT-2's decoding step, fp32 on the CPU, in one call: for the few new tokens of a step (B · s rows), the token and
// position embeddings, every block's two layer norms, four projections (bias, tanh GELU, residual adds), key/value
// append and attention over the cache, the final layer norm and, if given, the LM head's logits of each
// sequence's last token, in one parallel region; the cache's lengths are advanced in place.
//
// A batch-1 step is bound by streaming the weights once; the projections already stream them at the read rate
// (few_row_linear). What this removes is the fixed cost around them: ~50 small PyTorch calls, module calls and
// thread-pool wake-ups per step, each slowed by the caches the weight stream has just emptied (measured at
// 20-170 us each inside a step; benchmarks/results/design-measurements.md). The arithmetic is few_row_linear's and
// kvcache_attention_cpp's (the same kernels, the same split of the inner dimension between threads, the same
// order of sums), so projections and attention give those ops' bits; the layer norms sum in double. Registered as
// the dispatcher op sslfast::gpt2_decode_step.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "few_row_linear.h"
#include "kv_attention.h"

namespace sslfast {
namespace {

// the weights of one block, in the order gpt2_decode_step takes them (each Conv1D weight (in, out))
enum Slot : int64_t {
  kLn1Weight, kLn1Bias, kAttnWeight, kAttnBias, kAttnProjWeight, kAttnProjBias,
  kLn2Weight, kLn2Bias, kFcWeight, kFcBias, kMlpProjWeight, kMlpProjBias, kSlots
};

// out (M, D) = layer_norm(x (M, D)) with weight and bias (D,); statistics in double.
void layer_norm_rows(const float* x, int64_t M, int64_t D, const float* weight, const float* bias, double eps,
                     float* out) {
  for (int64_t m = 0; m < M; ++m) {
    const float* row = x + m * D;
    double sum = 0.0;
    for (int64_t i = 0; i < D; ++i) sum += row[i];
    const double mean = sum / D;
    double squares = 0.0;
    for (int64_t i = 0; i < D; ++i) squares += (row[i] - mean) * (row[i] - mean);
    const double inv = 1.0 / std::sqrt(squares / D + eps);
    for (int64_t i = 0; i < D; ++i) out[m * D + i] = static_cast<float>((row[i] - mean) * inv) * weight[i] + bias[i];
  }
}

// One projection x (M, K) @ w (K, N) + bias, shared by the threads of the enclosing parallel region:
// thread t < parts sums its part of K into partial t (M, N) (part 0 with the bias); after a barrier, each thread
// adds up the partials over its band of columns, in part order, applies `gelu` and adds `residual` (M, N), and
// writes y (M, N). `partials`: parts * M * N floats. Ends with a barrier: y is complete for every thread.
void shared_projection(const float* x, int64_t M, int64_t K, const float* w, const float* bias, int64_t N,
                       float* partials, bool gelu, const float* residual, float* y, int thread, int threads) {
  const int64_t parts = few_row_k_parts(K, threads);
  if (thread < parts) {
    int64_t k0, k1;
    few_row_k_range(K, parts, thread, &k0, &k1);
    float* out = partials + thread * M * N;
    if (k1 > k0) {
      few_row_columns_product(x + k0, K, w + k0 * N, N, thread == 0 ? bias : nullptr, out, N, M, k1 - k0, N);
    } else {
      for (int64_t m = 0; m < M; ++m)
        for (int64_t c = 0; c < N; ++c) out[m * N + c] = thread == 0 && bias ? bias[c] : 0.f;
    }
  }
#pragma omp barrier
  const int64_t blocks = (N + 15) / 16;  // column bands on 16-float boundaries
  const int64_t c0 = std::min(N, blocks * thread / threads * 16);
  const int64_t c1 = std::min(N, blocks * (thread + 1) / threads * 16);
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t c = c0; c < c1; ++c) {
      float v = partials[m * N + c];
      for (int64_t t = 1; t < parts; ++t) v += partials[(t * M + m) * N + c];
      if (gelu) v = gelu_tanh(v);
      if (residual) v += residual[m * N + c];
      y[m * N + c] = v;
    }
  }
#pragma omp barrier
}

// `t` checked to be an fp32 CPU tensor of shape (rows, cols) ((rows,) for cols 0), made contiguous (a copy only
// for a strided view).
at::Tensor checked_dense(const at::Tensor& t, int64_t rows, int64_t cols, const char* what, int64_t layer) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.dim() == (cols ? 2 : 1) &&
              t.size(0) == rows && (cols == 0 || t.size(1) == cols),
              "gpt2_decode_step: ", layer >= 0 ? "block " + std::to_string(layer) + "'s " : std::string(), what,
              " must be an fp32 CPU tensor of shape (", rows, cols ? ", " : "",
              cols ? std::to_string(cols) : std::string(), "), got ", t.sizes(), " ", t.scalar_type(), " on ",
              t.device());
  return t.contiguous();
}

}  // namespace

// input_ids (B, s) int64: the next s tokens of each of B sequences; wte (V, D) / wpe (P, D) the embeddings;
// weights: 12 per block (Slot order); key_caches / value_caches: per block (B, capacity, H, D / H), appended in
// place at each sequence's cache_seqlens (B,) int32 (its filled positions, advanced by s on return); eps: the two
// layer norms' per block, then the final one's; scales: the attention's per block; final_weight / final_bias:
// the final layer norm's; head_weight (V, D) / head_bias (V,): an LM head, or undefined -> the logits (B, V) of
// each sequence's last new token with a head, else the final hidden states (B · s, D), sequence-major.
at::Tensor gpt2_decode_step(const at::Tensor& input_ids, const at::Tensor& wte_in, const at::Tensor& wpe_in,
                            at::TensorList weights_in, at::TensorList key_caches, at::TensorList value_caches,
                            at::Tensor& cache_seqlens, at::ArrayRef<double> eps, at::ArrayRef<double> scales,
                            const at::Tensor& final_weight_in, const at::Tensor& final_bias_in,
                            const c10::optional<at::Tensor>& head_weight_in,
                            const c10::optional<at::Tensor>& head_bias_in) {
  TORCH_CHECK(input_ids.device().is_cpu() && input_ids.scalar_type() == at::kLong && input_ids.dim() == 2 &&
              input_ids.is_contiguous() && input_ids.numel() > 0,
              "gpt2_decode_step: input_ids must be a non-empty contiguous int64 CPU (B, s) tensor, got ",
              input_ids.sizes(), " ", input_ids.scalar_type());
  const int64_t batch = input_ids.size(0), s = input_ids.size(1), M = batch * s;
  TORCH_CHECK(wte_in.dim() == 2 && wpe_in.dim() == 2 && wte_in.size(1) == wpe_in.size(1),
              "gpt2_decode_step: wte (V, D) and wpe (P, D) expected, got ", wte_in.sizes(), " and ", wpe_in.sizes());
  const int64_t D = wte_in.size(1);
  const at::Tensor wte = checked_dense(wte_in, wte_in.size(0), D, "wte.weight", -1);
  const at::Tensor wpe = checked_dense(wpe_in, wpe_in.size(0), D, "wpe.weight", -1);
  const at::Tensor final_weight = checked_dense(final_weight_in, D, 0, "ln_f.weight", -1);
  const at::Tensor final_bias = checked_dense(final_bias_in, D, 0, "ln_f.bias", -1);
  const bool has_head = head_weight_in.has_value() && head_weight_in->defined();
  const int64_t vocab = has_head ? head_weight_in->size(0) : 0;
  at::Tensor head_weight, head_bias;
  if (has_head) {
    head_weight = checked_dense(*head_weight_in, vocab, D, "lm_head.weight", -1);
    if (head_bias_in.has_value() && head_bias_in->defined())
      head_bias = checked_dense(*head_bias_in, vocab, 0, "lm_head.bias", -1);
  }
  TORCH_CHECK(M <= kFewRowMaxRows, "gpt2_decode_step: at most ", kFewRowMaxRows, " new tokens in all, got ", M);
  const int64_t layers = static_cast<int64_t>(key_caches.size());
  TORCH_CHECK(static_cast<int64_t>(weights_in.size()) == kSlots * layers &&
              static_cast<int64_t>(value_caches.size()) == layers &&
              static_cast<int64_t>(eps.size()) == 2 * layers + 1 && static_cast<int64_t>(scales.size()) == layers,
              "gpt2_decode_step: expected ", kSlots, " weights, 2 eps and 1 scale per block (and the final eps) for ",
              layers, " blocks (key caches), got ", weights_in.size(), " weights, ", value_caches.size(),
              " value caches, ", eps.size(), " eps, ", scales.size(), " scales");
  TORCH_CHECK(cache_seqlens.device().is_cpu() && cache_seqlens.scalar_type() == at::kInt &&
              cache_seqlens.dim() == 1 && cache_seqlens.size(0) == batch && cache_seqlens.is_contiguous(),
              "gpt2_decode_step: cache_seqlens must be a contiguous (", batch, ",) int32 CPU tensor");
  TORCH_CHECK(layers > 0 && (key_caches[0].dim() == 4 && key_caches[0].size(2) > 0 &&
                              D % key_caches[0].size(2) == 0),
              "gpt2_decode_step: expected at least one block, with key caches (B, capacity, heads, D / heads)");
  const int64_t H = key_caches[0].size(2), hd = D / H;
  const int64_t capacity = key_caches[0].size(1);
  int32_t* starts = cache_seqlens.data_ptr<int32_t>();
  int64_t longest = 0;
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(starts[b] >= 0 && starts[b] + s <= capacity && starts[b] + s <= wpe.size(0),
                "gpt2_decode_step: sequence ", b, " has ", starts[b], " cached positions; ", s,
                " more do not fit in a cache of ", capacity, " and ", wpe.size(0), " position embeddings");
    longest = std::max<int64_t>(longest, starts[b] + s);
  }
  const int64_t* ids = input_ids.data_ptr<int64_t>();
  for (int64_t m = 0; m < M; ++m) {
    TORCH_CHECK(ids[m] >= 0 && ids[m] < wte.size(0), "gpt2_decode_step: input_ids must be in [0, ", wte.size(0),
                "), got ", ids[m]);
  }
  int64_t widest = 3 * D;  // the widest projection output
  std::vector<at::Tensor> weights(weights_in.size());  // dense (a strided one copied)
  std::vector<const float*> w_ptr(weights_in.size());
  std::vector<int64_t> inner(layers);
  for (int64_t l = 0; l < layers; ++l) {
    const at::Tensor* w = weights_in.data() + l * kSlots;
    at::Tensor* d = weights.data() + l * kSlots;
    inner[l] = w[kFcWeight].dim() == 2 ? w[kFcWeight].size(1) : 0;
    TORCH_CHECK(inner[l] > 0, "gpt2_decode_step: block ", l, "'s MLP weight must be (D, inner)");
    widest = std::max(widest, inner[l]);
    d[kLn1Weight] = checked_dense(w[kLn1Weight], D, 0, "ln_1.weight", l);
    d[kLn1Bias] = checked_dense(w[kLn1Bias], D, 0, "ln_1.bias", l);
    d[kAttnWeight] = checked_dense(w[kAttnWeight], D, 3 * D, "attn.c_attn.weight", l);
    d[kAttnBias] = checked_dense(w[kAttnBias], 3 * D, 0, "attn.c_attn.bias", l);
    d[kAttnProjWeight] = checked_dense(w[kAttnProjWeight], D, D, "attn.c_proj.weight", l);
    d[kAttnProjBias] = checked_dense(w[kAttnProjBias], D, 0, "attn.c_proj.bias", l);
    d[kLn2Weight] = checked_dense(w[kLn2Weight], D, 0, "ln_2.weight", l);
    d[kLn2Bias] = checked_dense(w[kLn2Bias], D, 0, "ln_2.bias", l);
    d[kFcWeight] = checked_dense(w[kFcWeight], D, inner[l], "mlp.c_fc.weight", l);
    d[kFcBias] = checked_dense(w[kFcBias], inner[l], 0, "mlp.c_fc.bias", l);
    d[kMlpProjWeight] = checked_dense(w[kMlpProjWeight], inner[l], D, "mlp.c_proj.weight", l);
    d[kMlpProjBias] = checked_dense(w[kMlpProjBias], D, 0, "mlp.c_proj.bias", l);
    for (int64_t slot = 0; slot < kSlots; ++slot) w_ptr[l * kSlots + slot] = d[slot].data_ptr<float>();
    for (const at::Tensor* cache : {&key_caches[l], &value_caches[l]}) {
      TORCH_CHECK(cache->device().is_cpu() && cache->scalar_type() == at::kFloat && cache->is_contiguous() &&
                  cache->dim() == 4 && cache->size(0) == batch && cache->size(1) == capacity &&
                  cache->size(2) == H && cache->size(3) == hd,
                  "gpt2_decode_step: block ", l, "'s caches must be contiguous fp32 CPU tensors of shape (",
                  batch, ", ", capacity, ", ", H, ", ", hd, "), got ", cache->sizes());
    }
  }
  std::vector<float*> key_ptr(layers), value_ptr(layers);
  for (int64_t l = 0; l < layers; ++l) {
    key_ptr[l] = key_caches[l].data_ptr<float>();
    value_ptr[l] = value_caches[l].data_ptr<float>();
  }

  at::Tensor out = has_head ? at::empty({batch, vocab}, wte.options()) : at::empty({M, D}, wte.options());
  const int threads = std::max(1, at::get_num_threads());
  std::vector<float> hidden(M * D);  // the hidden states between blocks
  const float* token_rows = wte.data_ptr<float>();
  const float* position_rows = wpe.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m) {
    const float* token = token_rows + ids[m] * D;
    const float* position = position_rows + (starts[m / s] + m % s) * D;
    for (int64_t i = 0; i < D; ++i) hidden[m * D + i] = token[i] + position[i];
  }
  std::vector<float> after_attention(M * D), attention(M * D), inner_act(M * widest), qkv(M * 3 * D);
  std::vector<float> normed(threads * M * D), partials(threads * M * widest);
  std::vector<double> scores(threads * longest), acc(threads * hd);
  const int64_t cache_row = H * hd, cache_batch = capacity * H * hd;
  const float* final_ptr[2] = {final_weight.data_ptr<float>(), final_bias.data_ptr<float>()};
  const float* head_ptr[2] = {has_head ? head_weight.data_ptr<float>() : nullptr,
                              head_bias.defined() ? head_bias.data_ptr<float>() : nullptr};
  float* out_ptr = out.data_ptr<float>();

#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), team = omp_get_num_threads();
    float* mine = normed.data() + t * M * D;  // each thread normalises the few rows itself: no barrier
    for (int64_t l = 0; l < layers; ++l) {
      const float* const* w = w_ptr.data() + l * kSlots;
      auto ptr = [&](Slot slot) { return w[slot]; };
      float* keys = key_ptr[l];
      float* values = value_ptr[l];
      layer_norm_rows(hidden.data(), M, D, ptr(kLn1Weight), ptr(kLn1Bias), eps[2 * l], mine);
      shared_projection(mine, M, D, ptr(kAttnWeight), ptr(kAttnBias), 3 * D, partials.data(), false, nullptr,
                        qkv.data(), t, team);
      // (sequence, head) pairs split between the threads: append the new keys and values, then attend
      const int64_t pairs = batch * H;
      for (int64_t pair = pairs * t / team; pair < pairs * (t + 1) / team; ++pair) {
        const int64_t b = pair / H, h = pair % H;
        float* key_rows = keys + b * cache_batch + h * hd;
        float* value_rows = values + b * cache_batch + h * hd;
        for (int64_t i = 0; i < s; ++i) {
          const float* row = qkv.data() + (b * s + i) * 3 * D;
          std::memcpy(key_rows + (starts[b] + i) * cache_row, row + D + h * hd, hd * sizeof(float));
          std::memcpy(value_rows + (starts[b] + i) * cache_row, row + 2 * D + h * hd, hd * sizeof(float));
        }
        for (int64_t i = 0; i < s; ++i) {  // causal: new token i sees the cache and new tokens 0..i
          const float* query = qkv.data() + (b * s + i) * 3 * D + h * hd;
          attend_row(query, key_rows, cache_row, value_rows, cache_row, starts[b] + i + 1, hd, scales[l],
                     scores.data() + t * longest, acc.data() + t * hd, attention.data() + (b * s + i) * D + h * hd);
        }
      }
#pragma omp barrier
      shared_projection(attention.data(), M, D, ptr(kAttnProjWeight), ptr(kAttnProjBias), D, partials.data(), false,
                        hidden.data(), after_attention.data(), t, team);
      layer_norm_rows(after_attention.data(), M, D, ptr(kLn2Weight), ptr(kLn2Bias), eps[2 * l + 1], mine);
      shared_projection(mine, M, D, ptr(kFcWeight), ptr(kFcBias), inner[l], partials.data(), true, nullptr,
                        inner_act.data(), t, team);
      shared_projection(inner_act.data(), M, inner[l], ptr(kMlpProjWeight), ptr(kMlpProjBias), D, partials.data(),
                        false, after_attention.data(), hidden.data(), t, team);
    }
    if (has_head) {  // each thread: the last tokens' final norm, then its band of vocabulary rows
      for (int64_t b = 0; b < batch; ++b)
        layer_norm_rows(hidden.data() + (b * s + s - 1) * D, 1, D, final_ptr[0], final_ptr[1], eps[2 * layers],
                        mine + b * D);
      few_row_rows_product(mine, D, head_ptr[0], D, head_ptr[1], out_ptr, vocab, batch, D, vocab * t / team,
                           vocab * (t + 1) / team);
    }
  }
  if (!has_head)
    layer_norm_rows(hidden.data(), M, D, final_ptr[0], final_ptr[1], eps[2 * layers], out_ptr);
  for (int64_t b = 0; b < batch; ++b) starts[b] += static_cast<int32_t>(s);
  return out;
}

}  // namespace sslfast

TORCH_LIBRARY_FRAGMENT(sslfast, m) {
  m.def("gpt2_decode_step(Tensor input_ids, Tensor wte, Tensor wpe, Tensor[] weights, Tensor(a!)[] key_caches, "
        "Tensor(b!)[] value_caches, Tensor(c!) cache_seqlens, float[] eps, float[] scales, Tensor final_weight, "
        "Tensor final_bias, Tensor? head_weight=None, Tensor? head_bias=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(sslfast, CPU, m) {
  m.impl("gpt2_decode_step", &sslfast::gpt2_decode_step);
}
