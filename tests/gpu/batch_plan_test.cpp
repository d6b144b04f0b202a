#include "gpu/batch_plan.h"

#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "runtime/error.h"

using namespace kvactor;
using kvactor::gpu::batch_plan;
using kvactor::gpu::build_batch_plan;
using kvactor::gpu::build_decode_plan;
using kvactor::gpu::make_sample_row;
using kvactor::gpu::sample_row;

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

TEST_CASE("leading one-token sequences become decode rows, up to the cap; the rest are tiled") {
  forward_batch batch;
  batch.seqs.push_back({{42}, 9, {7, 3, 20}, true});       // decode at position 9
  batch.seqs.push_back({{43}, 0, {4}, true});              // a one-token prompt, also a decode row
  batch.seqs.push_back({{44}, 2, {5}, true});              // a third: past a cap of 2
  batch.seqs.push_back({{5, 6, 7, 8, 9}, 3, {10, 11}, true}); // prefill chunk
  batch.seqs.push_back({{45}, 6, {12, 13}, true});         // one token after a chunk: tiled
  batch_plan p;
  build_batch_plan(batch, 100, layout, 2, p, {}, 0, 2);
  CHECK(p.decode_rows == 2);
  CHECK_FALSE(p.decode_plan);
  CHECK(p.num_tiles == 5); // {44}, three of the chunk, {45}
  CHECK(slice(p, p.tile_first, 5) == std::vector<int32_t>{2, 3, 5, 7, 8});
  CHECK(slice(p, p.token_ids, 3) == std::vector<int32_t>{42, 43, 44});
  CHECK(slice(p, p.qo_indptr, 3) == std::vector<int32_t>{0, 1, 2}); // decode row i is sequence i

  build_batch_plan(batch, 100, layout, 2, p, {}, 0, 8);
  CHECK(p.decode_rows == 3);
  CHECK(p.num_tiles == 4);
  CHECK(slice(p, p.tile_first, 4) == std::vector<int32_t>{3, 5, 7, 8});

  build_batch_plan(batch, 100, layout, 2, p); // no cap: every sequence tiled
  CHECK(p.decode_rows == 0);
  CHECK(p.num_tiles == 7);
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
  CHECK_THROWS_WITH_AS(run({1}, 0, {32}), doctest::Contains("page id 32 at index 0 is outside [0, 32)"), error);
  CHECK_THROWS_WITH_AS(run({}, 0, {0}), doctest::Contains("no new tokens"), error);
  CHECK_THROWS_WITH_AS(run({1}, -1, {0}), doctest::Contains("negative start_pos"), error);
}

TEST_CASE("sampling rows follow the arrays, 8-byte aligned, one per logits row") {
  forward_batch batch;
  batch.seqs.push_back({{5, 6, 7}, 0, {1}, true});
  batch.seqs.push_back({{8}, 4, {2, 3}, false});
  batch.seqs.push_back({{9}, 0, {4}, true});
  const std::vector<sample_row> rows{{0.5f, 0.9f, 40, 0.1f, 0.25, 1.3f, 7, 3}, {0.0f, 1.0f, 0, 0.0f, 0.75}};
  batch_plan p;
  build_batch_plan(batch, 100, layout, 2, p, rows);
  CHECK(p.sample_rows % 2 == 0);
  CHECK(p.sample_rows >= p.tile_first + size_t(p.num_tiles));
  REQUIRE(p.data.size() == p.sample_rows + 2 * sizeof(sample_row) / sizeof(int32_t));
  sample_row got[2];
  std::memcpy(static_cast<void*>(got), p.data.data() + p.sample_rows, sizeof got);
  CHECK(got[0].top_k == 40);
  CHECK(got[0].uniform == 0.25);
  CHECK(got[0].repetition_penalty == 1.3f);
  CHECK(got[0].penalty_begin == 7);
  CHECK(got[0].penalty_count == 3);
  CHECK(got[1].uniform == 0.75);
  CHECK(got[1].repetition_penalty == 1.0f);
  CHECK_THROWS_WITH_AS(build_batch_plan(batch, 100, layout, 2, p, {rows.data(), 1}),
                       doctest::Contains("1 sampling rows for 2 logits rows"), error);
}

TEST_CASE("a sampling row: top-k off at or past the vocabulary, the penalty's distinct tokens appended") {
  std::vector<int32_t> list{99};
  sampling_params p{0.7f, 0.9f, 50, 0.05f};
  p.seed = 12;
  sample_row r = make_sample_row(p, 3, {}, 64, list);
  CHECK(r.temperature == 0.7f);
  CHECK(r.top_p == 0.9f);
  CHECK(r.top_k == 50);
  CHECK(r.min_p == 0.05f);
  CHECK(r.uniform == sample_uniform(12, 3));
  CHECK(r.repetition_penalty == 1.0f);
  p.top_k = 64;
  CHECK(make_sample_row(p, 3, {}, 64, list).top_k == 0);

  // No penalty: the history is not listed.
  const std::vector<int32_t> history{5, 9, 5, 0, 9};
  CHECK(make_sample_row(p, 3, history, 64, list).penalty_count == 0);
  CHECK(list == std::vector<int32_t>{99});

  p.repetition_penalty = 1.3f;
  r = make_sample_row(p, 4, history, 64, list);
  CHECK(r.repetition_penalty == 1.3f);
  CHECK(r.penalty_begin == 1);
  CHECK(r.penalty_count == 3);
  CHECK(list == std::vector<int32_t>{99, 5, 9, 0});
  r = make_sample_row(p, 5, std::vector<int32_t>{7}, 64, list);
  CHECK(r.penalty_begin == 4);
  CHECK(r.penalty_count == 1);
  CHECK(list.back() == 7);
  // A penalty with no history changes nothing.
  CHECK(make_sample_row(p, 6, {}, 64, list).repetition_penalty == 1.0f);
  CHECK_THROWS_WITH_AS(make_sample_row(p, 7, std::vector<int32_t>{64}, 64, list), doctest::Contains("history token 64"),
                       error);
}

TEST_CASE("a decode plan pads to its rows and keeps every offset fixed") {
  forward_batch batch;
  batch.seqs.push_back({{11}, 5, {7, 8}, true});      // positions [0, 6): 2 pages
  batch.seqs.push_back({{12}, 0, {9, 30}, false});    // 1 page
  batch.seqs.push_back({{13}, 8, {1, 2, 3, 4}, true}); // positions [0, 9): 3 pages
  const std::vector<sample_row> rows{{1.0f, 1.0f, 0, 0.0f, 0.5}, {0.7f, 0.9f, 5, 0.0f, 0.125}};
  batch_plan p;
  build_decode_plan(batch, 100, layout, 4, 8, p, rows);
  CHECK(p.decode_rows == 4);
  CHECK(p.decode_plan);
  CHECK(p.num_tiles == 0);
  CHECK(p.num_tokens == 4);
  CHECK(p.num_logits == 4);
  CHECK(p.real_logits == 2);
  CHECK(slice(p, p.token_ids, 4) == std::vector<int32_t>{11, 12, 13, 0});
  CHECK(slice(p, p.positions, 4) == std::vector<int32_t>{5, 0, 8, -1});
  CHECK(slice(p, p.token_seq, 4) == std::vector<int32_t>{0, 1, 2, 3});
  CHECK(slice(p, p.qo_indptr, 5) == std::vector<int32_t>{0, 1, 2, 3, 4});
  CHECK(slice(p, p.page_indptr, 5) == std::vector<int32_t>{0, 2, 3, 6, 6});
  CHECK(slice(p, p.page_indices, 6) == std::vector<int32_t>{7, 8, 9, 1, 2, 3});
  CHECK(slice(p, p.logit_rows, 4) == std::vector<int32_t>{0, 2, 0, 0});
  CHECK(p.data.size() == p.page_indices + 6);
  sample_row got[4];
  std::memcpy(static_cast<void*>(got), p.data.data() + p.sample_rows, sizeof got);
  CHECK(got[1].top_k == 5);
  CHECK(got[2].temperature == 0.0f); // padding rows are greedy
  CHECK(got[3].temperature == 0.0f);

  // Another step of other sizes: the offsets depend on max_rows alone.
  const batch_plan first = p;
  forward_batch one;
  one.seqs.push_back({{14}, 30, std::vector<int32_t>(8, 5), true});
  build_decode_plan(one, 100, layout, 1, 8, p);
  CHECK(p.positions == first.positions);
  CHECK(p.page_indices == first.page_indices);
  CHECK(p.sample_rows == first.sample_rows);
  CHECK(p.page_indices == kvactor::gpu::decode_plan_header(8));
  CHECK(slice(p, p.page_indptr, 2) == std::vector<int32_t>{0, 8});

  CHECK_THROWS_AS(build_decode_plan(batch, 100, layout, 2, 8, p), error);  // 3 sequences in 2 rows
  CHECK_THROWS_AS(build_decode_plan(batch, 100, layout, 16, 8, p), error); // rows past max_rows
  forward_batch chunk;
  chunk.seqs.push_back({{1, 2}, 0, {0}, true});
  CHECK_THROWS_AS(build_decode_plan(chunk, 100, layout, 1, 8, p), error); // two new tokens
  one.seqs[0].page_table = {5};
  CHECK_THROWS_WITH_AS(build_decode_plan(one, 100, layout, 1, 8, p), doctest::Contains("page table has 1 pages"), error);
}

TEST_CASE("pages released behind a sliding window pass as -1; one the step attends to is refused") {
  // Window 6, pages of 4: a step starting at position 13 sees keys from 8 on,
  // so pages 0 and 1 (positions 0..7) may be released, page 2 may not.
  batch_plan p;
  const auto plan = [&](std::vector<int32_t> pages, int32_t start, int32_t window, bool decode) {
    forward_batch batch;
    batch.seqs.push_back({{1}, start, std::move(pages), true});
    if (decode)
      build_decode_plan(batch, 100, layout, 2, 2, p, {}, window);
    else
      build_batch_plan(batch, 100, layout, 4, p, {}, window);
  };
  for (bool decode : {false, true}) {
    CAPTURE(decode);
    plan({-1, -1, 5, 6}, 13, 6, decode);
    CHECK(slice(p, p.page_indices, 4) == std::vector<int32_t>{-1, -1, 5, 6});
    CHECK_THROWS_WITH_AS(plan({-1, -1, -1, 6}, 13, 6, decode),
                         doctest::Contains("page id -1 at index 2 is outside [0, 32) (released, but the step attends to it)"),
                         error);
    // Without a window nothing may be released.
    CHECK_THROWS_WITH_AS(plan({-1, -1, 5, 6}, 13, 0, decode), doctest::Contains("page id -1 at index 0"), error);
  }
}
