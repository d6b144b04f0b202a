#include "gpu/batch_plan.h"

#include <doctest/doctest.h>

#include <vector>

#include "runtime/error.h"

using namespace kvactor;
using kvactor::gpu::build_batch_plan;
using kvactor::gpu::batch_plan;

namespace {

std::vector<int32_t> slice(const batch_plan& p, size_t offset, size_t count) {
  return {p.data.begin() + ptrdiff_t(offset), p.data.begin() + ptrdiff_t(offset + count)};
}

const kv_layout layout{2, 32, 4, 2, 16}; // 32 pages of 4 slots

} // namespace

TEST_CASE("a mixed batch is flattened into back-to-back arrays") {
  forward_batch batch;
  batch.seqs.push_back({{5, 6, 7, 8, 9}, 3, {10, 11, 12, 13}, true}); // prefill chunk: positions 3..7
  batch.seqs.push_back({{42}, 9, {7, 3, 20, 21}, false});            // decode at position 9
  batch.seqs.push_back({{1, 2}, 0, {30}, true});                      // new prompt
  batch_plan p;
  build_batch_plan(batch, 100, layout, 2, p);

  CHECK(p.num_tokens == 8);
  CHECK(p.num_seqs == 3);
  CHECK(p.num_logits == 2);
  CHECK(p.tile_tokens == 2);
  CHECK(slice(p, p.token_ids, 8) == std::vector<int32_t>{5, 6, 7, 8, 9, 42, 1, 2});
  CHECK(slice(p, p.positions, 8) == std::vector<int32_t>{3, 4, 5, 6, 7, 9, 0, 1});
  CHECK(slice(p, p.token_seq, 8) == std::vector<int32_t>{0, 0, 0, 0, 0, 1, 2, 2});
  CHECK(slice(p, p.qo_indptr, 4) == std::vector<int32_t>{0, 5, 6, 8});
  // Positions [0, 8) need 2 pages, [0, 10) need 3, [0, 2) need 1: tables are cut.
  CHECK(slice(p, p.page_indptr, 4) == std::vector<int32_t>{0, 2, 5, 6});
  CHECK(slice(p, p.page_indices, 6) == std::vector<int32_t>{10, 11, 7, 3, 20, 30});
  CHECK(slice(p, p.logit_rows, 2) == std::vector<int32_t>{4, 7});
  // Tiles of 2 tokens never cross a sequence: 5 tokens -> 3 tiles.
  CHECK(p.num_tiles == 5);
  CHECK(slice(p, p.tile_first, 5) == std::vector<int32_t>{0, 2, 4, 5, 6});
  CHECK(p.tile_first + 5 == p.data.size());
}

TEST_CASE("a plan is rebuilt in place for the next step") {
  batch_plan p;
  forward_batch big;
  big.seqs.push_back({std::vector<int32_t>(40, 3), 0, std::vector<int32_t>(10, 1), true});
  build_batch_plan(big, 100, layout, 16, p);
  CHECK(p.num_tiles == 3);
  forward_batch small;
  small.seqs.push_back({{4}, 40, std::vector<int32_t>(11, 2), true});
  build_batch_plan(small, 100, layout, 16, p);
  CHECK(p.num_tokens == 1);
  CHECK(p.num_tiles == 1);
  CHECK(slice(p, p.positions, 1) == std::vector<int32_t>{40});
  CHECK(slice(p, p.page_indptr, 2) == std::vector<int32_t>{0, 11});
  CHECK(p.data.size() == p.tile_first + 1);
}

TEST_CASE("an empty batch gives an empty plan") {
  batch_plan p;
  build_batch_plan(forward_batch{}, 100, layout, 4, p);
  CHECK(p.num_tokens == 0);
  CHECK(p.num_tiles == 0);
  CHECK(slice(p, p.qo_indptr, 1) == std::vector<int32_t>{0});
}

TEST_CASE("invalid input throws a clear error") {
  batch_plan p;
  auto run = [&](std::vector<int32_t> tokens, int32_t start, std::vector<int32_t> pages) {
    forward_batch batch;
    batch.seqs.push_back({{1}, 0, {0}, true});
    batch.seqs.push_back({std::move(tokens), start, std::move(pages), true});
    build_batch_plan(batch, 100, layout, 4, p);
  };
  CHECK_THROWS_WITH_AS(run({1, 100}, 0, {0}), doctest::Contains("sequence 1: token id 100"), error);
  CHECK_THROWS_WITH_AS(run({-1}, 0, {0}), doctest::Contains("token id -1"), error);
  CHECK_THROWS_WITH_AS(run({1, 2, 3, 4, 5}, 0, {0}), doctest::Contains("page table has 1 pages"), error);
  CHECK_THROWS_WITH_AS(run({1}, 4, {0}), doctest::Contains("need 2"), error);
  CHECK_THROWS_WITH_AS(run({1}, 0, {32}), doctest::Contains("page id 32 is outside [0, 32)"), error);
  CHECK_THROWS_WITH_AS(run({}, 0, {0}), doctest::Contains("no new tokens"), error);
  CHECK_THROWS_WITH_AS(run({1}, -1, {0}), doctest::Contains("negative start_pos"), error);
}
