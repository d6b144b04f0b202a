#include "gpu/cuda_check.h"
#include "gpu/launch.cuh"
#include "gpu/paged_attention.cuh"
#include "runtime/error.h"

#include <string>

namespace kvactor::gpu {

namespace {

template <int HEAD_DIM>
void set_smem_limit(int32_t rows) {
  KVACTOR_CUDA_CHECK(cudaFuncSetAttribute(paged_attention_kernel<HEAD_DIM>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          int(attention_smem_layout(HEAD_DIM, rows).total)));
}

template <int HEAD_DIM>
void launch(const attention_params& p, int32_t num_tiles, cudaStream_t stream) {
  const size_t smem = attention_smem_layout(HEAD_DIM, p.tile_tokens * p.group).total;
  const dim3 grid(unsigned(num_tiles), unsigned(p.kv.num_kv_heads));
  launch_kernel(paged_attention_kernel<HEAD_DIM>, grid, attention_threads, smem, stream, p);
}

} // namespace

bool paged_attention_supports(int32_t head_dim) {
  switch (head_dim) {
    case 16: case 32: case 64: case 128: case 256: return true;
    default: return false;
  }
}

size_t paged_attention_smem_bytes(int32_t head_dim, int32_t rows) {
  return attention_smem_layout(head_dim, rows).total;
}

void init_paged_attention(int32_t head_dim, int32_t rows) {
  switch (head_dim) {
    case 16: set_smem_limit<16>(rows); break;
    case 32: set_smem_limit<32>(rows); break;
    case 64: set_smem_limit<64>(rows); break;
    case 128: set_smem_limit<128>(rows); break;
    case 256: set_smem_limit<256>(rows); break;
    default: throw error("paged attention: head_dim " + std::to_string(head_dim) + " has no kernel");
  }
}

void launch_paged_attention(const attention_params& p, int32_t num_tiles, cudaStream_t stream) {
  if (num_tiles == 0) return;
  if (p.kv.format != kv_format::bf16) throw error("paged attention: reads bf16 KV only");
  switch (p.kv.head_dim) {
    case 16: launch<16>(p, num_tiles, stream); break;
    case 32: launch<32>(p, num_tiles, stream); break;
    case 64: launch<64>(p, num_tiles, stream); break;
    case 128: launch<128>(p, num_tiles, stream); break;
    case 256: launch<256>(p, num_tiles, stream); break;
    default: throw error("paged attention: head_dim " + std::to_string(p.kv.head_dim) + " has no kernel");
  }
}

} // namespace kvactor::gpu
