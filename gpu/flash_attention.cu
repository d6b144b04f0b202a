#include <string>

#include "gpu/cuda_check.h"
#include "gpu/flash_attention.h"
#include "gpu/kv_dequant.cuh"
#include "gpu/launch.cuh"
#include "gpu/mma.cuh"
#include "gpu/vec.cuh"
#include "runtime/error.h"

namespace kvactor::gpu {

namespace {

constexpr float log2e = 1.4426950408889634f;
// A finite "minus infinity" for running maxima: exp2 of a difference with it
// is 0 (or 1 against itself), never NaN.
constexpr float no_score = -1e30f;
// How far (log2 units) a row's maximum may grow before its output is rescaled.
constexpr float rescale_margin = 8.0f;

// Shared rows are padded by 16 bytes: the 8 rows one ldmatrix reads then
// start in 8 different bank groups.
__host__ __device__ constexpr int flash_stride(int head_dim) { return head_dim + 8; }

// Q tile, then two stages of K, then two of V; bf16.
constexpr size_t flash_smem_bytes(int head_dim, int rows, int keys) {
  return sizeof(__nv_bfloat16) * size_t(rows + 4 * keys) * flash_stride(head_dim);
}

// W warps a block, each K/V tile serving all of them; KEYS keys per K/V
// tile; MT m-tiles of 16 query rows per warp (each K/V fragment read from
// shared memory then serves MT of them); Q_REGS: the warp's Q fragments
// stay in registers (else they are reread from shared memory each tile);
// MIN_BLOCKS: blocks per multiprocessor the register budget must allow; F:
// the cache's format. bf16 tiles are copied with
// cp.async; 8-bit tiles are loaded into registers a tile ahead and stored
// dequantized to bf16 once the current tile is done, so the tensor-core
// loop is the same for every format.
template <int D, int W, int KEYS, int MT, bool Q_REGS, int MIN_BLOCKS, kv_format F>
__global__ void __launch_bounds__(32 * W, MIN_BLOCKS) flash_attention_kernel(const attention_params p) {
  constexpr bool BF16 = F == kv_format::bf16;
  constexpr int THREADS = 32 * W, ROWS = 16 * MT * W;
  constexpr int STRIDE = flash_stride(D), KSTEPS = D / 16, S_TILES = KEYS / 8, O_TILES = D / 8;
  constexpr int CHUNKS = D / 8; // 16-byte pieces of a row
  static_assert(D % 16 == 0 && O_TILES % 2 == 0, "head_dim must be a multiple of 16");
  static_assert(Q_REGS ? MT == 1 : KSTEPS % 2 == 0, "Q fragments in registers for one m-tile, else reread in pairs");
  static_assert(KEYS % 16 == 0, "P fragments cover 16 keys");
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* q_s = reinterpret_cast<__nv_bfloat16*>(smem); // [ROWS][STRIDE]
  __nv_bfloat16* k_s = q_s + ROWS * STRIDE;                     // [2][KEYS][STRIDE]
  __nv_bfloat16* v_s = k_s + 2 * KEYS * STRIDE;                 // [2][KEYS][STRIDE]

  launch_next_kernel();
  wait_for_previous_kernel();
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  // NOTE: blocks go tile by tile, every kv head of a tile together, tiles
  // last first: a sequence's later tiles see more keys, so the longest
  // blocks start first and the tail is short.
  const int kv_head = int(blockIdx.x % unsigned(p.kv.num_kv_heads));
  const int32_t first = p.tile_first[gridDim.x / p.kv.num_kv_heads - 1 - blockIdx.x / p.kv.num_kv_heads];
  const int g = p.group;
  const int32_t seq = p.token_seq[first];
  const int ntok = min(p.tile_tokens, p.qo_indptr[seq + 1] - first);
  const int rows = ntok * g;
  const int32_t pos_first = p.positions[first];
  const int32_t pos_last = pos_first + ntok - 1; // a sequence's new tokens are consecutive
  const int32_t key_lo = p.window > 0 ? max(0, pos_first - p.window + 1) : 0;
  const int32_t* pages = p.kv.page_indices + p.kv.page_indptr[seq];
  const int32_t page_size = p.kv.page_size;
  // NOTE: page sizes are powers of two in practice: shifts instead of the
  // divisions that made the loader cost as much as the softmax.
  const bool page_pow2 = (page_size & (page_size - 1)) == 0;
  const int page_shift = __ffs(page_size) - 1;
  const size_t token_stride = size_t(p.kv.num_kv_heads) * D;
  // Row r is token first + r / g, q head kv_head * g + r % g.
  const auto q_offset = [&](int r) {
    return (size_t(first + r / g) * p.num_heads + size_t(kv_head) * g + r % g) * D;
  };

  // Keys [k0, k0 + KEYS) into a stage; keys past pos_last are zeros.
  const auto load_kv = [&](int stage, int32_t k0) {
    for (int c = tid; c < KEYS * CHUNKS; c += THREADS) {
      const int j = c / CHUNKS, part = c % CHUNKS;
      const int32_t key = k0 + j;
      const bool valid = key <= pos_last;
      const int32_t page = page_pow2 ? key >> page_shift : key / page_size;
      const int32_t in_page = page_pow2 ? key & (page_size - 1) : key % page_size;
      const size_t at =
          valid ? (size_t(pages[page]) * page_size + in_page) * token_stride + size_t(kv_head) * D + part * 8 : 0;
      const int dst = (stage * KEYS + j) * STRIDE + part * 8;
      cp_async_16(k_s + dst, p.kv.k_bf16() + at, valid);
      cp_async_16(v_s + dst, p.kv.v_bf16() + at, valid);
    }
    cp_async_commit();
  };
  // 8-bit: the pieces this thread moves of keys [k0, k0 + KEYS), into
  // registers, then dequantized into a stage; keys past pos_last are zeros.
  constexpr int PIECES = (KEYS * CHUNKS + THREADS - 1) / THREADS;
  kv8_raw pending[BF16 ? 1 : PIECES];
  const auto fetch_kv8 = [&](int32_t k0) {
#pragma unroll
    for (int i = 0; i < PIECES; ++i) {
      const int c = tid + i * THREADS, j = c / CHUNKS, part = c % CHUNKS;
      const int32_t key = k0 + j;
      pending[i] = kv8_raw{};
      if (c < KEYS * CHUNKS && key <= pos_last) {
        const int32_t page = pages[page_pow2 ? key >> page_shift : key / page_size];
        const int32_t slot = page_pow2 ? key & (page_size - 1) : key % page_size;
        pending[i] = load_kv8(p.kv, (size_t(page) * page_size + slot) * token_stride + size_t(kv_head) * D + part * 8,
                              page, slot, kv_head);
      }
    }
  };
  const auto store_kv8 = [&](int stage) {
    if constexpr (!BF16) {
#pragma unroll
      for (int i = 0; i < PIECES; ++i) {
        const int c = tid + i * THREADS, j = c / CHUNKS, part = c % CHUNKS;
        if (c >= KEYS * CHUNKS) continue;
        const int dst = (stage * KEYS + j) * STRIDE + part * 8;
        *reinterpret_cast<uint4*>(k_s + dst) = dequant8_bf16<F>(pending[i].k, pending[i].k_scale);
        *reinterpret_cast<uint4*>(v_s + dst) = dequant8_bf16<F>(pending[i].v, pending[i].v_scale);
      }
    }
  };

  if constexpr (BF16) {
    load_kv(0, key_lo);
  } else {
    fetch_kv8(key_lo);
    store_kv8(0);
  }
  for (int c = tid; c < ROWS * CHUNKS; c += THREADS) {
    const int r = c / CHUNKS, part = c % CHUNKS;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < rows) v = *reinterpret_cast<const uint4*>(p.q + q_offset(r) + part * 8);
    *reinterpret_cast<uint4*>(q_s + r * STRIDE + part * 8) = v;
  }
  __syncthreads();

  // M-tile mt of this warp is rows (warp * MT + mt) * 16 .. + 16, read as A
  // fragments of 16 dims.
  const auto q_row = [&](int mt) {
    return q_s + ((warp * MT + mt) * 16 + lane % 16) * STRIDE + (lane / 16) * 8;
  };
  uint32_t qf[Q_REGS ? KSTEPS : 1][4];
  if constexpr (Q_REGS) {
#pragma unroll
    for (int kk = 0; kk < KSTEPS; ++kk) ldmatrix_x4(qf[kk], q_row(0) + kk * 16);
  }

  // In the accumulator layout a thread holds rows r0 and r0 + 8 of each
  // m-tile; padding rows take the last token's position, so they see keys
  // and stay finite. (Computed where needed: registers are short.)
  const auto query_pos = [&](int mt, int i) {
    const int r = (warp * MT + mt) * 16 + lane / 4 + 8 * i;
    return r < rows ? pos_first + r / g : pos_last;
  };
  float o[MT][O_TILES][4];
  float m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int t = 0; t < O_TILES; ++t) o[mt][t][0] = o[mt][t][1] = o[mt][t][2] = o[mt][t][3] = 0.0f;
    m[mt][0] = m[mt][1] = no_score;
    l[mt][0] = l[mt][1] = 0.0f;
  }
  const float scale = p.scale * log2e; // scores in log2 units, for exp2

  const int32_t tiles = (pos_last - key_lo) / KEYS + 1;
  for (int32_t it = 0; it < tiles; ++it) {
    const int32_t k0 = key_lo + it * KEYS;
    if constexpr (BF16) {
      if (it + 1 < tiles)
        load_kv((it + 1) & 1, k0 + KEYS);
      else
        cp_async_commit(); // an empty group keeps the count of groups in flight uniform
      cp_async_wait<1>();
      __syncthreads();
    } else if (it + 1 < tiles) {
      fetch_kv8(k0 + KEYS); // in flight while this tile is computed
    }
    const __nv_bfloat16* ks = k_s + (it & 1) * KEYS * STRIDE;
    const __nv_bfloat16* vs = v_s + (it & 1) * KEYS * STRIDE;

    // S = Q K^T: K rows are the column-major B operand as stored.
    float s[MT][S_TILES][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < S_TILES; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.0f;
    if constexpr (Q_REGS) {
      if constexpr (KSTEPS % 2 == 0) {
        // As below: consecutive mma instructions write different tiles.
#pragma unroll
        for (int kk = 0; kk < KSTEPS; kk += 2) {
          uint32_t b[S_TILES][4];
#pragma unroll
          for (int j = 0; j < S_TILES; ++j)
            ldmatrix_x4(b[j], ks + (j * 8 + lane % 8) * STRIDE + kk * 16 + (lane / 8) * 8);
#pragma unroll
          for (int j = 0; j < S_TILES; ++j) mma_bf16_16816(s[0][j], qf[kk], b[j][0], b[j][1]);
#pragma unroll
          for (int j = 0; j < S_TILES; ++j) mma_bf16_16816(s[0][j], qf[kk + 1], b[j][2], b[j][3]);
        }
      } else {
#pragma unroll
        for (int j = 0; j < S_TILES; ++j) {
#pragma unroll
          for (int kk = 0; kk < KSTEPS; ++kk) {
            uint32_t b[2];
            ldmatrix_x2(b, ks + (j * 8 + lane % 8) * STRIDE + kk * 16 + ((lane / 8) % 2) * 8);
            mma_bf16_16816(s[0][j], qf[kk], b[0], b[1]);
          }
        }
      }
    } else {
      // Q fragment pairs are read once per tile and used for every key. The
      // first k-step's products of every (m-tile, key tile) go before the
      // second's: consecutive mma instructions then never wait on each
      // other's accumulators.
#pragma unroll
      for (int kk = 0; kk < KSTEPS; kk += 2) {
        uint32_t qa[MT][4], qb[MT][4], b[S_TILES][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          ldmatrix_x4(qa[mt], q_row(mt) + kk * 16);
          ldmatrix_x4(qb[mt], q_row(mt) + (kk + 1) * 16);
        }
#pragma unroll
        for (int j = 0; j < S_TILES; ++j)
          ldmatrix_x4(b[j], ks + (j * 8 + lane % 8) * STRIDE + kk * 16 + (lane / 8) * 8);
#pragma unroll
        for (int j = 0; j < S_TILES; ++j)
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) mma_bf16_16816(s[mt][j], qa[mt], b[j][0], b[j][1]);
#pragma unroll
        for (int j = 0; j < S_TILES; ++j)
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) mma_bf16_16816(s[mt][j], qb[mt], b[j][2], b[j][3]);
      }
    }

    // Mask only the tiles that cross the causal edge, the window's edge or
    // the end of the keys.
    const bool edge = k0 + KEYS - 1 > pos_first || (p.window > 0 && k0 < pos_last - p.window + 1);
    if (edge) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int32_t qp = query_pos(mt, i);
#pragma unroll
          for (int j = 0; j < S_TILES; ++j)
#pragma unroll
            for (int e = 2 * i; e < 2 * i + 2; ++e) {
              const int32_t key = k0 + j * 8 + (lane % 4) * 2 + (e & 1);
              const bool visible = key <= qp && (p.window <= 0 || key > qp - p.window);
              if (!visible) s[mt][j][e] = -INFINITY;
            }
        }
    }

    // Online softmax over the tile; the four lanes of a row hold its keys.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      float top[2] = {no_score, no_score};
#pragma unroll
      for (int j = 0; j < S_TILES; ++j) {
        top[0] = fmaxf(top[0], fmaxf(s[mt][j][0], s[mt][j][1]));
        top[1] = fmaxf(top[1], fmaxf(s[mt][j][2], s[mt][j][3]));
      }
      float m_new[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        top[i] = fmaxf(top[i], __shfl_xor_sync(0xffffffffu, top[i], 1));
        top[i] = fmaxf(top[i], __shfl_xor_sync(0xffffffffu, top[i], 2));
        m_new[i] = fmaxf(m[mt][i], top[i] * scale);
      }
      // NOTE: the running maximum moves only when some row of the warp
      // grew by more than rescale_margin: until then a probability is at
      // most 2^8, which the fp32 sums and the bf16 P fragments hold as well
      // as values up to 1, and the output's rescale (as many multiplies as
      // the tile has mma instructions) is skipped. After the first tiles the
      // maximum rarely grows that much.
      if (__any_sync(0xffffffffu, m_new[0] > m[mt][0] + rescale_margin || m_new[1] > m[mt][1] + rescale_margin)) {
        float alpha[2];
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          alpha[i] = exp2f(m[mt][i] - m_new[i]);
          m[mt][i] = m_new[i];
          l[mt][i] *= alpha[i];
        }
#pragma unroll
        for (int t = 0; t < O_TILES; ++t) {
          o[mt][t][0] *= alpha[0];
          o[mt][t][1] *= alpha[0];
          o[mt][t][2] *= alpha[1];
          o[mt][t][3] *= alpha[1];
        }
      }
#pragma unroll
      for (int j = 0; j < S_TILES; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float pe = exp2f(fmaf(s[mt][j][e], scale, -m[mt][e / 2]));
          s[mt][j][e] = pe;
          l[mt][e / 2] += pe;
        }
    }

    // O += P V: two accumulator tiles of P form one A fragment; V rows are
    // the row-major B operand, read transposed.
#pragma unroll
    for (int t = 0; t < KEYS / 16; ++t) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        a[mt][0] = pack_bf16(s[mt][2 * t][0], s[mt][2 * t][1]);
        a[mt][1] = pack_bf16(s[mt][2 * t][2], s[mt][2 * t][3]);
        a[mt][2] = pack_bf16(s[mt][2 * t + 1][0], s[mt][2 * t + 1][1]);
        a[mt][3] = pack_bf16(s[mt][2 * t + 1][2], s[mt][2 * t + 1][3]);
      }
#pragma unroll
      for (int j = 0; j < O_TILES; j += 2) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, vs + (t * 16 + lane % 8 + ((lane / 8) % 2) * 8) * STRIDE + j * 8 + (lane / 16) * 8);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma_bf16_16816(o[mt][j], a[mt], b[0], b[1]);
          mma_bf16_16816(o[mt][j + 1], a[mt], b[2], b[3]);
        }
      }
    }
    if constexpr (!BF16) {
      // The other stage was last read before the previous iteration's
      // barrier; the barrier below publishes it.
      if (it + 1 < tiles) store_kv8((it + 1) & 1);
    }
    __syncthreads(); // the stage is read; the next iteration refills it
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      float sum = l[mt][i];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int r = (warp * MT + mt) * 16 + lane / 4 + 8 * i;
      if (r >= rows) continue;
      const float inv = 1.0f / sum;
      __nv_bfloat16* out = p.out + q_offset(r) + (lane % 4) * 2;
#pragma unroll
      for (int t = 0; t < O_TILES; ++t)
        *reinterpret_cast<uint32_t*>(out + t * 8) = pack_bf16(o[mt][t][2 * i] * inv, o[mt][t][2 * i + 1] * inv);
    }
}

// The shape of each variant. Head size 16 has a single Q fragment: every
// variant runs as the first there.
struct variant_shape {
  int warps, keys, m_tiles;
  bool q_registers;
  int min_blocks;
};

constexpr variant_shape shape_of(flash_variant v, int head_dim) {
  if (head_dim == 16) return {4, 64, 1, true, 1};
  switch (v) {
    case flash_variant::rows64_keys64_q_registers: return {4, 64, 1, true, 1};
    case flash_variant::rows64_keys32_q_registers: return {4, 32, 1, true, 3};
    case flash_variant::rows64_keys32_q_shared: return {4, 32, 1, false, 4};
    case flash_variant::rows128_keys64: return {4, 64, 2, false, 2};
    case flash_variant::rows256_keys64: return {8, 64, 2, false, 1};
    case flash_variant::rows256_keys32: return {8, 32, 2, false, 1};
    default: return {4, 32, 2, false, 2};
  }
}

template <int D, flash_variant V, kv_format F = kv_format::bf16>
constexpr auto kernel_of() {
  constexpr variant_shape s = shape_of(V, D);
  return flash_attention_kernel<D, s.warps, s.keys, s.m_tiles, s.q_registers, s.min_blocks, F>;
}

template <int D, flash_variant V>
constexpr size_t smem_of() {
  constexpr variant_shape s = shape_of(V, D);
  return flash_smem_bytes(D, 16 * s.m_tiles * s.warps, s.keys);
}

template <int D, flash_variant V, kv_format F = kv_format::bf16>
void set_smem_limit() {
  KVACTOR_CUDA_CHECK(
      cudaFuncSetAttribute(kernel_of<D, V, F>(), cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_of<D, V>())));
}

template <int D>
void set_smem_limits() {
  set_smem_limit<D, flash_variant::rows64_keys64_q_registers>();
  set_smem_limit<D, flash_variant::rows64_keys32_q_registers>();
  set_smem_limit<D, flash_variant::rows64_keys32_q_shared>();
  set_smem_limit<D, flash_variant::rows128_keys64>();
  set_smem_limit<D, flash_variant::rows128_keys32>();
  set_smem_limit<D, flash_variant::rows256_keys64>();
  set_smem_limit<D, flash_variant::rows256_keys32>();
  set_smem_limit<D, kv8_flash_variant, kv_format::fp8>();
  set_smem_limit<D, kv8_flash_variant, kv_format::int8>();
}

template <int D, flash_variant V, kv_format F = kv_format::bf16>
void launch(const attention_params& p, int32_t num_tiles, cudaStream_t stream) {
  const unsigned blocks = unsigned(num_tiles) * unsigned(p.kv.num_kv_heads);
  launch_kernel(kernel_of<D, V, F>(), blocks, 32 * shape_of(V, D).warps, smem_of<D, V>(), stream, p);
}

template <int D>
void launch_variant(const attention_params& p, int32_t num_tiles, cudaStream_t stream, flash_variant v) {
  // 8-bit caches have one variant.
  if (p.kv.format == kv_format::fp8) return launch<D, kv8_flash_variant, kv_format::fp8>(p, num_tiles, stream);
  if (p.kv.format == kv_format::int8) return launch<D, kv8_flash_variant, kv_format::int8>(p, num_tiles, stream);
  switch (v) {
    case flash_variant::rows64_keys64_q_registers:
      launch<D, flash_variant::rows64_keys64_q_registers>(p, num_tiles, stream);
      break;
    case flash_variant::rows64_keys32_q_registers:
      launch<D, flash_variant::rows64_keys32_q_registers>(p, num_tiles, stream);
      break;
    case flash_variant::rows64_keys32_q_shared:
      launch<D, flash_variant::rows64_keys32_q_shared>(p, num_tiles, stream);
      break;
    case flash_variant::rows128_keys64: launch<D, flash_variant::rows128_keys64>(p, num_tiles, stream); break;
    case flash_variant::rows256_keys64: launch<D, flash_variant::rows256_keys64>(p, num_tiles, stream); break;
    case flash_variant::rows256_keys32: launch<D, flash_variant::rows256_keys32>(p, num_tiles, stream); break;
    default: launch<D, flash_variant::rows128_keys32>(p, num_tiles, stream); break;
  }
}

} // namespace

bool flash_attention_supports(int32_t head_dim, int32_t group) {
  const bool dim = head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128;
  return dim && group >= 1 && group <= 64;
}

int32_t flash_attention_rows(int32_t head_dim, flash_variant variant) {
  const variant_shape s = shape_of(variant, head_dim);
  return 16 * s.m_tiles * s.warps;
}

int32_t flash_attention_tile_tokens(int32_t head_dim, int32_t group, flash_variant variant) {
  return flash_attention_rows(head_dim, variant) / group;
}

void init_flash_attention() {
  set_smem_limits<16>();
  set_smem_limits<32>();
  set_smem_limits<64>();
  set_smem_limits<128>();
}

void launch_flash_attention(const attention_params& p, int32_t num_tiles, cudaStream_t stream, flash_variant v) {
  if (num_tiles == 0) return;
  if (kv_is_quantized(p.kv.format)) v = kv8_flash_variant;
  if (!flash_attention_supports(p.kv.head_dim, p.group) ||
      p.tile_tokens != flash_attention_tile_tokens(p.kv.head_dim, p.group, v))
    throw error("flash attention: head_dim " + std::to_string(p.kv.head_dim) + ", group " + std::to_string(p.group) +
                ", tiles of " + std::to_string(p.tile_tokens) + " tokens are not supported");
  switch (p.kv.head_dim) {
    case 16: launch_variant<16>(p, num_tiles, stream, v); break;
    case 32: launch_variant<32>(p, num_tiles, stream, v); break;
    case 64: launch_variant<64>(p, num_tiles, stream, v); break;
    default: launch_variant<128>(p, num_tiles, stream, v); break;
  }
}

} // namespace kvactor::gpu
