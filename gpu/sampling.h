#pragma once
// Token choice on the GPU, one thread block per logits row, so that only
// token ids cross to the host. It computes what runtime/sampler.cpp's
// sample_token computes: the repetition penalty first (over the distinct
// tokens of the request's history, which the host lists); then greedy is
// the lowest index of the largest logit; otherwise the logits are divided
// by the temperature, probabilities are exp(double(l / T - max)), top-k,
// then top-p over what top-k kept, then min-p each keep a prefix of the
// candidates ordered by probability (lower index first among equals), and
// the row's uniform number picks by inverse CDF over the kept candidates in
// index order.
//
// Instead of sorting, each prefix is found by a radix descent over the order
// key below, 4 bits a level, counting candidates (top-k) or summing their
// probability in double (top-p); sums run in a fixed order, so a row's token
// is the same on every run. The keys are computed once and written over the
// logits, so that the later passes read 4 bytes and do no division.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "gpu/batch_plan.h"

namespace kvactor::gpu {

// The order of candidates as an integer: larger is more likely. `d` is the
// scaled logit minus the row's maximum (<= 0). Every d whose probability
// underflows to 0 in double gets key 0, so those tie and fall back to index
// order, as in the CPU sampler.
// NOTE: distinct d can round to the same double probability only when
// |d| < 2e-9; there the CPU sampler ties them and this key does not.
__host__ __device__ inline uint32_t sample_order_key(float d) {
  if (d == 0.0f) return 0x80000000u; // +0 and -0 alike
  if (d < -700.0f && exp(double(d)) == 0.0) return 0;
  uint32_t bits;
  memcpy(&bits, &d, sizeof bits);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// The candidates a row kept: those with key > `key`, and those with key ==
// `key` and index <= `index`. For greedy rows: the chosen token alone, in
// the raw logits' order.
struct sample_cutoff {
  uint32_t key = 0;
  int32_t index = 0;
};

// Dynamic shared memory of one block for `vocab` candidates.
size_t sample_smem_bytes(int32_t vocab);

// Raises the kernel's shared-memory limit for `vocab`; once per device
// before launching.
void init_sampling(int32_t vocab);

// NOTE: the rows of temperature > 0 are overwritten with their candidates'
// order keys (the first pass writes them, the later ones read them).
void launch_sample(float* logits,                  // [num_rows, vocab]
                   const sample_row* rows,         // [num_rows]
                   const int32_t* penalty_tokens,  // the rows' penalty lists; read only for a penalty != 1
                   int32_t* tokens,                // [num_rows]
                   sample_cutoff* cutoffs,         // [num_rows] or null
                   int32_t num_rows, int32_t vocab, cudaStream_t stream);

} // namespace kvactor::gpu
