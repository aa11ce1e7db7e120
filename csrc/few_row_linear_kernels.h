// The few-row projection kernels, compiled once per instruction set: few_row_linear.cpp includes this file
// inside a namespace under a `#pragma GCC target`, with SSLFAST_LANES floats per vector (no include guard).
// A fixed-width float vector (GCC/Clang vector extension), compiled for the including namespace's target.
template <int L>
struct Vec {
  typedef float type __attribute__((vector_size(L * sizeof(float))));
};

template <int L>
inline __attribute__((always_inline)) typename Vec<L>::type load(const float* p) {
  typename Vec<L>::type v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <int L>
inline __attribute__((always_inline)) void store(float* p, typename Vec<L>::type v) {
  std::memcpy(p, &v, sizeof(v));
}

// The sum of a vector's lanes, as a tree of halves (no chain of L dependent scalar additions).
template <int L>
inline __attribute__((always_inline)) float lane_sum(typename Vec<L>::type v) {
  if constexpr (L == 1) {
    return v[0];
  } else {
    typename Vec<L / 2>::type lo, hi;
    std::memcpy(&lo, &v, sizeof(lo));
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
    return lane_sum<L / 2>(lo + hi);
  }
}

// W (N, K) row-major: out[m, n] = sum_k x[m, k] * w[n, k] for n in [n0, n1). One weight row at a time (one
// sequential stream per thread: measured faster than interleaving several rows), its k range split over S
// accumulators per input row so that a single row still keeps several multiply-adds in flight.
constexpr int64_t kPrefetchRows = 2;  // software prefetch this many weight rows ahead of the one being read
// Prefetches go to L2 (prefetcht1): measured faster than the non-temporal hint (which was slower than none) and
// than L1 on the 2-core AMD EPYC (Zen 4) machines; benchmarks/results/design-measurements.md.
constexpr int kPrefetchLocality = 2;

template <int L, int M>
inline __attribute__((always_inline)) void rows_major(const float* x, int64_t ldx, const float* w, int64_t ldw,
                                                      const float* bias, float* y, int64_t ldy, int64_t K,
                                                      int64_t n0, int64_t n1) {
  using V = typename Vec<L>::type;
  constexpr int S = M >= 4 ? 1 : 4 / M;
  const int64_t k_split = K - K % (L * S);
  const int64_t k_vec = K - K % L;
  for (int64_t n = n0; n < n1; ++n) {
    const float* row = w + n * ldw;
    V acc[M][S];
    for (int m = 0; m < M; ++m)
      for (int s = 0; s < S; ++s) acc[m][s] = V{};
    int64_t k = 0;
    const float* ahead = n + kPrefetchRows < n1 ? row + kPrefetchRows * ldw : nullptr;
    for (; k < k_split; k += L * S) {
      if (ahead)
        for (int64_t line = 0; line < L * S; line += 16) __builtin_prefetch(ahead + k + line, 0, kPrefetchLocality);
      for (int s = 0; s < S; ++s) {
        const V b = load<L>(row + k + s * L);
        for (int m = 0; m < M; ++m) acc[m][s] += load<L>(x + m * ldx + k + s * L) * b;
      }
    }
    for (; k < k_vec; k += L) {
      const V b = load<L>(row + k);
      for (int m = 0; m < M; ++m) acc[m][0] += load<L>(x + m * ldx + k) * b;
    }
    for (int m = 0; m < M; ++m) {
      V total = acc[m][0];
      for (int s = 1; s < S; ++s) total += acc[m][s];
      float sum = lane_sum<L>(total);
      for (int64_t j = k_vec; j < K; ++j) sum += x[m * ldx + j] * row[j];
      y[m * ldy + n] = bias ? sum + bias[n] : sum;
    }
  }
}

// W (K, N) row-major (the weight viewed (N, K) with strides (1, N)): out[m, c] = sum_k x[m, k] * w[k, c] for
// c in [c0, c1) (plus the bias), accumulated into y, KB weight rows at a time: each pass reads a
// contiguous segment of KB rows and updates the band of y once (measured: 8 rows stream at the read rate,
// 1 row at about half of it), prefetching the next pass's rows into L2 as it goes (measured
// faster in a decoding step: benchmarks/results/design-measurements.md).
template <int L, int M, int KB>
inline __attribute__((always_inline)) void columns_pass(const float* x, int64_t ldx, const float* w, int64_t ldw,
                                                        float* y, int64_t ldy, int64_t k, int64_t K_total,
                                                        int64_t c0, int64_t c1) {
  using V = typename Vec<L>::type;
  const int64_t width = c1 - c0;
  const int64_t cv = c0 + (width - width % L);
  float xs[M][KB];
  for (int m = 0; m < M; ++m)
    for (int j = 0; j < KB; ++j) xs[m][j] = x[m * ldx + k + j];
  const float* r0 = w + k * ldw;
  const float* next = k + 2 * KB <= K_total ? r0 + KB * ldw : nullptr;  // the next pass's rows
  for (int64_t c = c0; c < cv; c += L) {
    V b[KB];
    if (next)
      for (int j = 0; j < KB; ++j) __builtin_prefetch(next + j * ldw + c, 0, kPrefetchLocality);
    for (int j = 0; j < KB; ++j) b[j] = load<L>(r0 + j * ldw + c);
    for (int m = 0; m < M; ++m) {
      V acc = load<L>(y + m * ldy + c);
      for (int j = 0; j < KB; ++j) acc += b[j] * xs[m][j];
      store<L>(y + m * ldy + c, acc);
    }
  }
  for (int64_t c = cv; c < c1; ++c)
    for (int m = 0; m < M; ++m) {
      float acc = y[m * ldy + c];
      for (int j = 0; j < KB; ++j) acc += r0[j * ldw + c] * xs[m][j];
      y[m * ldy + c] = acc;
    }
}

template <int L, int M>
inline __attribute__((always_inline)) void columns_major(const float* x, int64_t ldx, const float* w, int64_t ldw,
                                                         const float* bias, float* y, int64_t ldy, int64_t K,
                                                         int64_t c0, int64_t c1) {
  constexpr int KB = 8;
  for (int m = 0; m < M; ++m)
    for (int64_t c = c0; c < c1; ++c) y[m * ldy + c] = bias ? bias[c] : 0.f;
  int64_t k = 0;
  for (; k + KB <= K; k += KB) columns_pass<L, M, KB>(x, ldx, w, ldw, y, ldy, k, K, c0, c1);
  for (; k < K; ++k) columns_pass<L, M, 1>(x, ldx, w, ldw, y, ldy, k, K, c0, c1);
}

template <int L, int M>
struct Table {
  static void rows(const float* x, int64_t ldx, const float* w, int64_t ldw, const float* bias, float* y,
                   int64_t ldy, int64_t K, int64_t a, int64_t b) {
    rows_major<L, M>(x, ldx, w, ldw, bias, y, ldy, K, a, b);
  }
  static void columns(const float* x, int64_t ldx, const float* w, int64_t ldw, const float* bias, float* y,
                      int64_t ldy, int64_t K, int64_t a, int64_t b) {
    columns_major<L, M>(x, ldx, w, ldw, bias, y, ldy, K, a, b);
  }
};


constexpr int kLanes = SSLFAST_LANES;

Kernel pick(bool rows, int m) {
  static const Kernel r[kMaxRows] = {Table<kLanes, 1>::rows, Table<kLanes, 2>::rows, Table<kLanes, 3>::rows,
                                     Table<kLanes, 4>::rows, Table<kLanes, 5>::rows, Table<kLanes, 6>::rows,
                                     Table<kLanes, 7>::rows, Table<kLanes, 8>::rows};
  static const Kernel c[kMaxRows] = {Table<kLanes, 1>::columns, Table<kLanes, 2>::columns, Table<kLanes, 3>::columns,
                                     Table<kLanes, 4>::columns, Table<kLanes, 5>::columns, Table<kLanes, 6>::columns,
                                     Table<kLanes, 7>::columns, Table<kLanes, 8>::columns};
  return rows ? r[m - 1] : c[m - 1];
}
