#include "runtime/null_backend.h"

#include <doctest/doctest.h>

#include "runtime/error.h"

using namespace kvactor;

TEST_CASE("the null backend favours the token numbered like the last position") {
  model_config c;
  c.vocab_size = 8;
  c.num_layers = 2;
  c.num_kv_heads = 1;
  c.head_dim = 4;
  null_backend b(c, 16, 4);
  CHECK(b.layout().num_pages == 16);
  CHECK(b.layout().page_size == 4);
  forward_batch batch;
  batch.seqs = {seq_step{{1, 2, 3}, 0, {0}, true}, seq_step{{5}, 12, {1, 2, 3, 4}, false},
                seq_step{{7}, 9, {5, 6, 7}, true}};
  std::vector<float> logits;
  b.forward(batch, logits);
  REQUIRE(logits.size() == 2 * 8);
  std::vector<float> first(8, 0.0f), second(8, 0.0f);
  first[2] = 1.0f;  // position 2
  second[1] = 1.0f; // position 9 % 8
  CHECK(std::vector<float>(logits.begin(), logits.begin() + 8) == first);
  CHECK(std::vector<float>(logits.begin() + 8, logits.end()) == second);
  c.vocab_size = 0;
  CHECK_THROWS_AS(null_backend(c, 16, 4), error);
}
